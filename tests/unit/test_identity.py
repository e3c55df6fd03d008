import pytest

from crm_bridge.identity import InvalidIdentity, brazil_mobile_canonical, external_parts, normalize


@pytest.mark.parametrize("raw", ["+34 911 22 23 33", "0034911222333", "911222333", "+34-911-222-333", " 911 22 23 33 "])
def test_spanish_phone_formats_are_one_identity(raw: str) -> None:
    assert normalize("phone", raw, "ES") == "+34911222333"


def test_an_international_number_needs_no_region() -> None:
    assert normalize("phone", "+44 20 7946 0958") == "+442079460958"


@pytest.mark.parametrize(
    "raw", ["+55 11 8765-4321", "+55 11 98765-4321", "+551187654321", "(11) 8765-4321", "011 98765 4321"]
)
def test_brazil_mobile_with_or_without_the_ninth_digit_is_one_identity(raw: str) -> None:
    assert normalize("phone", raw, "BR") == "+5511987654321"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+55 11 3456-7890", "+551134567890"),  # São Paulo landline: valid as written, no 9 added
        ("+55 11 2555-1234", "+551125551234"),  # landline
        ("+55 11 5555-1234", "+551155551234"),  # valid landline although it starts with 5
        ("+55 21 7654-3210", "+552176543210"),  # an 8-digit range phonenumbers still accepts as is
        ("+55 61 9876-5432", "+5561998765432"),  # Brasília mobile, old form
        ("+55 92 8123-4567", "+5592981234567"),  # Manaus mobile, old form
        ("+34 600 11 22 33", "+34600112233"),  # not Brazil: untouched
    ],
)
def test_brazil_ninth_digit_rule(raw: str, expected: str) -> None:
    assert normalize("phone", raw, "BR") == expected


def test_brazil_rule_is_idempotent() -> None:
    assert brazil_mobile_canonical("+5511987654321") == "+5511987654321"
    assert brazil_mobile_canonical(brazil_mobile_canonical("+551187654321")) == "+5511987654321"


@pytest.mark.parametrize(("raw", "expected"), [("34911222333", "+34911222333"), ("+34911222333", "+34911222333")])
def test_whatsapp_wa_id_is_an_e164_number(raw: str, expected: str) -> None:
    assert normalize("whatsapp", raw, "ES") == expected


def test_whatsapp_wa_id_from_brazil_gets_the_ninth_digit() -> None:
    # WhatsApp gives old Brazilian accounts wa_ids without the 9: the same person as the phone identity.
    assert normalize("whatsapp", "551187654321") == normalize("phone", "+55 11 98765-4321") == "+5511987654321"


def test_whatsapp_bsuid_is_kept_as_given_but_trimmed() -> None:
    assert normalize("whatsapp_bsuid", "  US.13491208655302741918 ") == "US.13491208655302741918"


def test_email_is_lowercased() -> None:
    assert normalize("email", "  Ana.Garcia+Soporte@Example.COM ") == "ana.garcia+soporte@example.com"


def test_webchat_token_is_kept_as_given() -> None:
    assert normalize("webchat", " vSt-9f8A_77 ") == "vSt-9f8A_77"


@pytest.mark.parametrize(
    ("raw", "system"),
    [("0035g00000AbCdE", "salesforce"), ("0035g00000AbCdE", " Salesforce "), ("salesforce:0035g00000AbCdE", None)],
)
def test_external_id_is_namespaced_by_its_system(raw: str, system: str | None) -> None:
    value = normalize("external", raw, system=system)
    assert value == "salesforce:0035g00000AbCdE"
    assert external_parts(value) == ("salesforce", "0035g00000AbCdE")


def test_external_id_keeps_colons_after_the_system() -> None:
    assert normalize("external", "urn:x:1", system="hubspot") == "hubspot:urn:x:1"
    assert external_parts("hubspot:urn:x:1") == ("hubspot", "urn:x:1")


@pytest.mark.parametrize(
    ("kind", "raw", "system", "problem"),
    [
        ("phone", "", None, "no caller number"),
        ("phone", "anonymous", None, "no caller number"),
        ("phone", "12", None, "not a possible number"),
        ("phone", "not a number", None, "not a phone number"),
        ("whatsapp", "", None, "empty wa_id"),
        ("whatsapp", "34 911 222 333", None, "not a wa_id"),
        ("whatsapp", "12", None, "not a phone number"),
        ("whatsapp_bsuid", "   ", None, "empty value"),
        ("whatsapp_bsuid", "US 1349", None, "whitespace"),
        ("webchat", "", None, "empty value"),
        ("webchat", "tok\x00en", None, "control characters"),
        ("webchat", "x" * 300, None, "longer than 256"),
        ("email", "", None, "empty address"),
        ("email", "ana.example.com", None, "not an e-mail address"),
        ("email", "ana@localhost", None, "not an e-mail address"),
        ("email", "ana@@example.com", None, "not an e-mail address"),
        ("email", "a b@example.com", None, "not an e-mail address"),
        ("email", "a" * 250 + "@example.com", None, "longer than 254"),
        ("external", "0035g00000AbCdE", None, "needs its system"),
        ("external", "0035g", "", "system ''"),
        ("external", "0035g", "sales force", "system 'sales force'"),
        ("external", "0035g", "9crm", "system '9crm'"),
        ("external", "  ", "salesforce", "empty id"),
        ("phone", "+34911222333", "salesforce", "only external identities have a system"),
        ("fax", "+34911222333", None, "unknown kind"),
    ],
)
def test_invalid_identities_name_the_kind_and_the_problem(
    kind: str, raw: str, system: str | None, problem: str
) -> None:
    with pytest.raises(InvalidIdentity) as err:
        normalize(kind, raw, "ES", system=system)
    assert err.value.kind == kind
    assert str(err.value).startswith(f"invalid {kind} identity: ")
    assert problem in str(err.value)


def test_invalid_identity_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="invalid email identity"):
        normalize("email", "nope")
