"""The client's fast signer must sign exactly as the reference ``sign`` does."""

from __future__ import annotations

import random

import pytest

from batchsubmit.auth import Credentials, RequestSigner, sign

CHARS = "abcXYZ019 -_.~/%+=&?é视频'\"!"


@pytest.mark.parametrize("token", [None, "STSTOKENEXAMPLE"])
def test_fast_signer_matches_reference(token: str | None) -> None:
    """For many methods, paths, queries and bodies, RequestSigner == sign()."""
    rng = random.Random(11)
    credentials = Credentials("AKTESTEXAMPLE0000000", "SK" * 20, token)
    fixed = {
        "Content-Type": "application/json",
        "Host": "iva.cn-north-4.myhuaweicloud.com",
        "X-Project-Id": "0123456789abcdef0123456789abcdef",
    }
    if token:
        fixed["X-Security-Token"] = token
    signer = RequestSigner(credentials, fixed)
    for _ in range(300):
        method = rng.choice(["GET", "POST", "DELETE"])
        path = "/v2/p/services/" + "".join(rng.choice(CHARS) for _ in range(rng.randint(1, 12)))
        query = {
            "".join(rng.choice(CHARS) for _ in range(3)): rng.randint(0, 9)
            for _ in range(rng.randint(0, 3))
        }
        body = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
        headers = signer.headers(method, path, query or None, body)
        expected = sign(
            credentials,
            method,
            path,
            query or None,
            {k: v for k, v in headers.items() if k != "Authorization"},
            body,
        )
        assert headers["Authorization"] == expected
