#!/bin/sh
# Start Asterisk on the configuration the asterisk-config service rendered into /etc/asterisk-hilo. That
# service marks a finished rendering with .ready; podman-compose does not wait for it (docker compose does,
# through depends_on), so wait here, at most HILO_CONFIG_WAIT_S seconds.
set -eu
src=/etc/asterisk-hilo
i=0
until [ -e "$src/.ready" ]; do
    i=$((i + 1))
    if [ "$i" -gt "${HILO_CONFIG_WAIT_S:-120}" ]; then
        echo "error: no rendered configuration in $src (is the asterisk-config service done?)" >&2
        exit 1
    fi
    sleep 1
done
# The rendered files replace Debian's of the same name; Debian's other defaults stay. Debian's sample
# users.conf is deprecated (a warning at every load) and unused.
cp "$src"/*.conf /etc/asterisk/
rm -f /etc/asterisk/users.conf
# SIP over TLS (hilo-tls.conf): the certificate and key of HILO_SIP_TLS_CERTS, mounted read-only at
# /etc/asterisk-tls, copied where hilo-tls.conf reads them, readable by Asterisk's user only.
tls=/etc/asterisk-tls
for f in sip.crt sip.key; do
    if [ ! -s "$tls/$f" ]; then
        echo "error: no $tls/$f: HILO_SIP_TLS_CERTS must name a folder with sip.crt and sip.key" \
            "(docs/security.md, SIP over TLS and SRTP)" >&2
        exit 1
    fi
done
install -d -m 700 /etc/asterisk/keys/hilo
install -m 600 "$tls/sip.crt" "$tls/sip.key" /etc/asterisk/keys/hilo/
install -d -o asterisk -g asterisk /run/asterisk
chown -R asterisk:asterisk /etc/asterisk /usr/share/asterisk/sounds/hilo /var/lib/asterisk /var/log/asterisk \
    /var/spool/asterisk /var/cache/asterisk /run/asterisk
chmod -R o-rwx /etc/asterisk
exec asterisk -f -U asterisk -G asterisk
