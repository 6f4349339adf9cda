"""Deterministic keys and X.509 certificates for the samples.

Key generation in `cryptography` draws from the OS, which would make every run different. Here RSA
primes come from a seeded generator with a Miller-Rabin test, EC keys from a seeded scalar, and
ECDSA signatures are deterministic (RFC 6979), so each certificate is the same on every run.
These keys are test material only; they protect nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

RSA_EXPONENT = 65537
MILLER_RABIN_ROUNDS = 32
SMALL_PRIMES = [p for p in range(3, 2000) if all(p % d for d in range(2, int(p**0.5) + 1))]

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _seeded(seed: str) -> random.Random:
    return random.Random(hashlib.sha256(seed.encode()).digest())


def _is_probable_prime(n: int, rng: random.Random) -> bool:
    if any(n % p == 0 for p in SMALL_PRIMES):
        return n in SMALL_PRIMES
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for _ in range(MILLER_RABIN_ROUNDS):
        x = pow(rng.randrange(2, n - 1), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _rsa_prime(rng: random.Random, bits: int) -> int:
    while True:
        candidate = rng.getrandbits(bits) | (0b11 << (bits - 2)) | 1
        if (candidate - 1) % RSA_EXPONENT and _is_probable_prime(candidate, rng):
            return candidate


def rsa_key(seed: str, bits: int = 2048) -> rsa.RSAPrivateKey:
    """An RSA key whose primes come from a generator seeded with `seed`."""
    rng = _seeded(seed)
    p, q = _rsa_prime(rng, bits // 2), _rsa_prime(rng, bits // 2)
    d = pow(RSA_EXPONENT, -1, (p - 1) * (q - 1))
    public = rsa.RSAPublicNumbers(RSA_EXPONENT, p * q)
    private = rsa.RSAPrivateNumbers(p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q),
                                    rsa.rsa_crt_iqmp(p, q), public)
    return private.private_key()


def ec_key(seed: str) -> ec.EllipticCurvePrivateKey:
    """A P-256 key whose scalar is derived from `seed`."""
    scalar = int.from_bytes(hashlib.sha256(b"ec:" + seed.encode()).digest(), "big")
    return ec.derive_private_key(scalar % (2**255), ec.SECP256R1())


def sign(key: PrivateKey, data: bytes) -> bytes:
    """PKCS#1 v1.5 / SHA-256 for RSA, deterministic ECDSA / SHA-256 for EC."""
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))


def _name(common_name: str, organization: str | None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        parts.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(parts)


@dataclass(frozen=True, slots=True)
class CertSpec:
    common_name: str
    organization: str | None
    serial: int
    not_before: dt.datetime
    days: int
    dns_names: tuple[str, ...] = ()


def make_cert(spec: CertSpec, key: PrivateKey, issuer: x509.Name | None = None,
              issuer_key: PrivateKey | None = None, is_ca: bool = False) -> bytes:
    """DER certificate; self-signed unless an issuer name and key are given."""
    subject = _name(spec.common_name, spec.organization)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(key.public_key())
        .serial_number(spec.serial)
        .not_valid_before(spec.not_before)
        .not_valid_after(spec.not_before + dt.timedelta(days=spec.days))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if spec.dns_names:
        sans = x509.SubjectAlternativeName([x509.DNSName(n) for n in spec.dns_names])
        builder = builder.add_extension(sans, critical=False)
    signer = issuer_key or key
    deterministic = True if isinstance(signer, ec.EllipticCurvePrivateKey) else None
    cert = builder.sign(signer, hashes.SHA256(), ecdsa_deterministic=deterministic)
    return cert.public_bytes(serialization.Encoding.DER)


def cert_fingerprint_sha256(der: bytes) -> str:
    """The form SDP a=fingerprint uses: upper-case hex pairs separated by colons."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
