#!/usr/bin/env python3
"""Write the seed corpus of the `authorization` and `path` fuzz targets (Python stdlib only).

The `config` seeds are hand-written YAML files in seeds/config/ and are not generated.
Tokens are HS256 with the harness secret (fuzz/checks.rs SECRET) and are valid at the
harness's fixed time NOW (2026-12-04T00:00:00Z), so they verify in every run.

    python3 fuzz/make_seeds.py        # rewrites fuzz/seeds/authorization and fuzz/seeds/path
"""
import base64
import hashlib
import hmac
import json
import os

SECRET = b"0123456789abcdef0123456789abcdef"
NOW = 1_796_342_400
HERE = os.path.dirname(os.path.abspath(__file__))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def js(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def sign(header, claims, secret=SECRET) -> str:
    head = header if isinstance(header, bytes) else js(header)
    body = claims if isinstance(claims, bytes) else js(claims)
    signing_input = f"{b64(head)}.{b64(body)}"
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


HS256 = {"alg": "HS256", "typ": "JWT"}
CLAIMS = {
    "fresh": False,
    "iat": NOW,
    "jti": "6f1c1a52-2a8e-4c0e-9d0c-0f3c1f0b6a11",
    "type": "access",
    "sub": "test@example.com",
    "nbf": NOW,
    "exp": NOW + 900,
    "iss": "iss",
    "aud": "aud",
    "roles": ["user"],
}


def claims(**changes):
    out = dict(CLAIMS)
    for k, v in changes.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


VALID = sign(HS256, CLAIMS)

# name -> token (written raw, and as "Bearer <token>")
TOKENS = {
    "valid": VALID,
    "valid-kid": sign({"alg": "HS256", "kid": "main"}, CLAIMS),
    "valid-aud-list": sign(HS256, claims(aud=["other", "aud"])),
    "valid-float-exp": sign(HS256, claims(exp=NOW + 900.5)),
    "valid-no-type": sign(HS256, claims(type=None)),
    "padded-header": VALID.replace(".", "==.", 1),
    "alg-none": f"{b64(js({'alg': 'none', 'typ': 'JWT'}))}.{b64(js(CLAIMS))}.",
    "alg-none-upper": f"{b64(js({'alg': 'None'}))}.{b64(js(CLAIMS))}.",
    "alg-hs512": sign({"alg": "HS512"}, CLAIMS),
    "alg-rs256": sign({"alg": "RS256"}, CLAIMS),
    "alg-missing": sign({"typ": "JWT"}, CLAIMS),
    "crit": sign({"alg": "HS256", "crit": ["exp"]}, CLAIMS),
    "crit-empty": sign({"alg": "HS256", "crit": []}, CLAIMS),
    "kid-number": sign({"alg": "HS256", "kid": 7}, CLAIMS),
    "duplicate-alg": sign(b'{"alg":"none","alg":"HS256"}', CLAIMS),
    "expired": sign(HS256, claims(exp=NOW - 1)),
    "immature-nbf": sign(HS256, claims(nbf=NOW + 60)),
    "immature-iat": sign(HS256, claims(iat=NOW + 60)),
    "exp-string": sign(HS256, claims(exp="never")),
    "exp-huge": sign(HS256, claims(exp=1e300)),
    "exp-negative": sign(HS256, claims(exp=-9223372036854775808)),
    "exp-u64": sign(HS256, claims(exp=18446744073709551615)),
    "no-exp": sign(HS256, claims(exp=None)),
    "wrong-iss": sign(HS256, claims(iss="other")),
    "no-aud": sign(HS256, claims(aud=None)),
    "aud-number": sign(HS256, claims(aud=[1])),
    "sub-number": sign(HS256, claims(sub=42)),
    "jti-number": sign(HS256, claims(jti=1)),
    "refresh": sign(HS256, claims(type="refresh")),
    "roles-object": sign(HS256, claims(roles={"a": 1})),
    "payload-array": sign(HS256, b"[1,2]"),
    "payload-not-json": sign(HS256, b"{\"sub\":"),
    "header-array": sign(b"[]", CLAIMS),
    "wrong-secret": sign(HS256, CLAIMS, b"another-secret-of-32-bytes-long!!"),
    "bad-base64-header": "e30!." + VALID.split(".", 1)[1],
    "bad-base64-payload": VALID.split(".")[0] + ".*." + VALID.split(".")[2],
    "bad-base64-signature": VALID.rsplit(".", 1)[0] + ".%%%",
    "two-segments": VALID.rsplit(".", 1)[0],
    "four-segments": VALID + ".x",
    "empty-segments": "..",
}

# name -> raw Authorization input (one or two header values, separated by a newline)
HEADERS = {
    "bearer-abc": "Bearer abc",
    "bearer-lowercase": "bearer " + VALID,
    "bearer-extra-spaces": "  Bearer    " + VALID + "  ",
    "bearer-commas": ",Bearer " + VALID + ",",
    "basic-then-bearer": "Basic dXNlcjpwYXNz, Bearer " + VALID,
    "two-bearer-fields": "Bearer a, Bearer b",
    "two-headers": "Bearer " + VALID + "\nBearer abc",
    "bearer-only": "Bearer",
    "bearer-two-words": "Bearer a b",
    "basic": "Basic dXNlcjpwYXNz",
    "empty": "",
    "tab": "Bearer\t" + VALID,
    "non-ascii": "Bearer caf\u00e9",
}

PATHS = [
    "/",
    "//properties",
    "/properties/3",
    "/users/login/../properties",
    "/users/login/../../properties",
    "/a/./b/",
    "/%70roperties",
    "/a/%2e%2e/b",
    "/a/.%2E/b",
    "/../../x",
    "/a%20b",
    "/a%c3%a9",
    "/a;b",
    "/a%3bb",
    "/properties%2f..",
    "/a%2Fb",
    "/a%5cb",
    "/a%00",
    "/a%7f",
    "/a%252e",
    "/a\\b",
    "/a%",
    "/a%z",
    "/a%zz",
    "/a%+1",
    "*",
    "relative",
    "/a/b/c/../../d/./e//f/",
    "/%7Euser/%41%42",
    "/a/..",
    "/a/b/..%2f",
]


def write(target: str, name: str, data: bytes) -> None:
    folder = os.path.join(HERE, "seeds", target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def main() -> None:
    for target in ("authorization", "path"):
        folder = os.path.join(HERE, "seeds", target)
        if os.path.isdir(folder):
            for old in os.listdir(folder):
                os.remove(os.path.join(folder, old))
    for name, token in TOKENS.items():
        write("authorization", f"token-{name}", token.encode())
        write("authorization", f"bearer-{name}", f"Bearer {token}".encode())
    for name, value in HEADERS.items():
        write("authorization", f"header-{name}", value.encode())
    for i, p in enumerate(PATHS):
        write("path", f"path-{i:02}", p.encode())


if __name__ == "__main__":
    main()
