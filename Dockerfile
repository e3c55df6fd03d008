# The Hilo server image (production path with docker-compose.yml).
FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends espeak-ng libespeak-ng1 sox \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY hilo hilo
COPY asterisk asterisk
COPY ivr ivr
COPY dialplans dialplans
COPY routing routing
COPY crm_bridge crm_bridge
COPY recordings recordings
COPY bridges bridges
COPY console console
RUN pip install --no-cache-dir .
ENV HILO_DIALPLANS_DIR=/app/dialplans
CMD ["sh", "-c", "hilo db migrate && hilo serve"]
