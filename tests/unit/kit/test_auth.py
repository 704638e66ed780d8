import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from yigongti_kit import auth
from yigongti_kit.auth import (
    Principal,
    TokenError,
    generate_keypair,
    issue_token,
    main,
    scoped_institutions,
    verify_token,
    verify_token_cached,
)

PRIVATE, PUBLIC = generate_keypair()
OTHER_PRIVATE, OTHER_PUBLIC = generate_keypair()


def token(**overrides):
    args = dict(user="u1", institution="CJ-TH-01", roles=["clinician"], audience="lab")
    args.update(overrides)
    return issue_token(PRIVATE, **args)


def reason_of(tok, public=PUBLIC, audience="lab"):
    with pytest.raises(TokenError) as caught:
        verify_token(tok, public, audience)
    return caught.value.reason


def test_valid_token_gives_the_principal():
    principal = verify_token(token(roles=["clinician", "lab_tech"]), PUBLIC, "lab")
    assert principal == Principal("u1", "CJ-TH-01", ("clinician", "lab_tech"))
    assert principal.has_role("lab_tech") and not principal.has_role("admin")


def test_claims_are_the_agreed_ones():
    claims = jwt.decode(token(), options={"verify_signature": False})
    assert set(claims) == {"sub", "inst", "roles", "iat", "exp", "iss", "aud"}
    assert claims["iss"] == "yigongti" and claims["aud"] == "lab"
    assert jwt.get_unverified_header(token())["alg"] == "EdDSA"


def test_expired_token_is_refused():
    old = issue_token(
        PRIVATE,
        user="u",
        institution="i",
        roles=[],
        audience="lab",
        ttl_s=60,
        now=time.time() - 3600,
    )
    assert reason_of(old) == "expired"


def test_token_signed_by_another_key_is_refused():
    assert reason_of(token(), public=OTHER_PUBLIC) == "bad_signature"


def test_token_for_another_service_is_refused():
    assert reason_of(token(audience="settlement")) == "wrong_audience"


def test_tampered_claims_are_refused():
    header, payload, signature = token().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["roles"] = ["admin"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert reason_of(f"{header}.{forged}.{signature}") == "bad_signature"


def test_unsigned_token_is_refused():
    claims = jwt.decode(token(), options={"verify_signature": False})
    unsigned = jwt.encode(claims, key=None, algorithm="none")
    assert reason_of(unsigned) in {"bad_signature", "malformed"}


def test_hmac_token_keyed_with_the_public_key_is_refused():
    # the classic algorithm-confusion forgery
    claims = jwt.decode(token(), options={"verify_signature": False})
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    mac = hmac.new(PUBLIC.encode(), header + b"." + body, hashlib.sha256).digest()
    forged = b".".join([header, body, base64.urlsafe_b64encode(mac).rstrip(b"=")]).decode()
    assert reason_of(forged) == "bad_signature"


def test_token_without_institution_is_refused():
    tok = jwt.encode(
        {
            "sub": "u",
            "roles": [],
            "iat": int(time.time()),
            "exp": int(time.time()) + 60,
            "iss": "yigongti",
            "aud": "lab",
        },
        PRIVATE,
        algorithm="EdDSA",
    )
    assert reason_of(tok) == "missing_claim"


def test_roles_must_be_a_list_of_strings():
    now = int(time.time())
    tok = jwt.encode(
        {
            "sub": "u",
            "inst": "i",
            "roles": "admin",
            "iat": now,
            "exp": now + 60,
            "iss": "yigongti",
            "aud": "lab",
        },
        PRIVATE,
        algorithm="EdDSA",
    )
    assert reason_of(tok) == "bad_claim"


def test_garbage_is_malformed():
    assert reason_of("not-a-token") == "malformed"


def test_scope_is_own_institution_without_reference_data():
    p = Principal("u", "CJ-TH-01", ())
    assert scoped_institutions(p) == {"CJ-TH-01"}


def test_scope_extends_down_the_medical_community():
    tree = {"CJ-TH-01": ["CJ-TB-01", "CJ-TB-02"], "CJ-TB-01": ["CJ-VC-01"], "CJ-TH-02": ["X"]}
    assert scoped_institutions(Principal("u", "CJ-TH-01", ()), tree) == {
        "CJ-TH-01",
        "CJ-TB-01",
        "CJ-TB-02",
        "CJ-VC-01",
    }
    assert scoped_institutions(Principal("u", "CJ-TB-01", ()), lambda i: tree.get(i, [])) == {
        "CJ-TB-01",
        "CJ-VC-01",
    }


def test_cli_keygen_and_token(tmp_path, capsys, monkeypatch):
    assert main(["keygen", "--out", str(tmp_path)]) == 0
    private_pem = (tmp_path / "private.pem").read_text()
    public_pem = (tmp_path / "public.pem").read_text()
    assert (tmp_path / "private.pem").stat().st_mode & 0o077 == 0
    capsys.readouterr()
    assert (
        main(
            [
                "token",
                "--user",
                "u9",
                "--inst",
                "I",
                "--roles",
                "a, b",
                "--aud",
                "lab",
                "--key",
                str(tmp_path / "private.pem"),
            ]
        )
        == 0
    )
    tok = capsys.readouterr().out.strip()
    assert verify_token(tok, public_pem, "lab") == Principal("u9", "I", ("a", "b"))

    monkeypatch.setenv("AUTH_PRIVATE_KEY", private_pem.replace("\n", "\\n"))
    assert main(["token", "--user", "u9", "--inst", "I", "--aud", "lab"]) == 0
    tok = capsys.readouterr().out.strip()
    assert verify_token(tok, public_pem, "lab").roles == ()


def test_cli_keygen_prints_both_keys(capsys):
    assert main(["keygen"]) == 0
    out = capsys.readouterr().out
    assert "BEGIN PRIVATE KEY" in out and "BEGIN PUBLIC KEY" in out


def test_cached_verification_answers_as_the_first_and_ends_at_expiry():
    tok = token()
    first = verify_token_cached(tok, PUBLIC, "lab")
    assert verify_token_cached(tok, PUBLIC, "lab") == first
    # The cache is per key and audience: the same token is still refused elsewhere.
    with pytest.raises(TokenError):
        verify_token_cached(tok, OTHER_PUBLIC, "lab")
    with pytest.raises(TokenError):
        verify_token_cached(tok, PUBLIC, "referral")
    # Past its expiry (the cached entry's end moved back) the token is refused.
    slot = (tok, PUBLIC, "lab", auth.ISSUER)
    auth._verified[slot] = (first, time.time() - 1)
    with pytest.raises(TokenError) as caught:
        verify_token_cached(tok, PUBLIC, "lab")
    assert caught.value.reason == "expired"


def test_a_refused_token_is_not_remembered():
    forged = issue_token(OTHER_PRIVATE, user="u1", institution="CJ-TH-01", roles=["clinician"],
                         audience="lab")
    for _ in range(2):
        with pytest.raises(TokenError):
            verify_token_cached(forged, PUBLIC, "lab")
    assert not [k for k in auth._verified if k[0] == forged]


def test_the_signing_key_rotates_without_refusing_live_tokens():
    """Verifying keys are a set while the signing key rotates: the new one is
    added, tokens are signed with it, the old one goes once its tokens expired."""
    old_private, old_public = generate_keypair()
    new_private, new_public = generate_keypair()
    old_token = issue_token(old_private, user="u", institution="I", roles=["r"],
                            audience="lab")
    new_token = issue_token(new_private, user="u", institution="I", roles=["r"],
                            audience="lab")
    both = old_public + new_public
    assert verify_token(old_token, both, "lab").user == "u"
    assert verify_token(new_token, both, "lab").user == "u"
    with pytest.raises(TokenError, match="bad_signature"):
        verify_token(old_token, new_public, "lab")


def test_the_issuer_is_a_setting_and_a_token_of_another_issuer_is_refused():
    private, public = generate_keypair()
    token = issue_token(private, user="u", institution="I", roles=[], audience="lab",
                        issuer="https://sso.example-hospital.cn/realms/county")
    assert verify_token(token, public, "lab",
                        issuer="https://sso.example-hospital.cn/realms/county").user == "u"
    with pytest.raises(TokenError, match="wrong_issuer"):
        verify_token(token, public, "lab")
