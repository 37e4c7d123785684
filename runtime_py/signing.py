"""Ed25519 signing and verification of bundle manifests and trending packs.

Signing lives next to verification so the two can never disagree on the scheme: the signature is the raw 64-byte
Ed25519 signature over the exact bytes that are stored (canonical manifest JSON), nothing re-serialised.
Keys are PEM: PKCS8 for the private key, SubjectPublicKeyInfo for the public key.
"""
from __future__ import annotations

from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import BundleError

SIGNATURE_BYTES = 64


def generate_keypair() -> tuple[bytes, bytes]:
    """A fresh (private_pem, public_pem) pair, for tests and for export's key ceremony."""
    key = Ed25519PrivateKey.generate()
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return priv, pub


def _pem_bytes(pem: bytes | str | Path) -> bytes:
    """Accept PEM bytes, PEM text, or a path to a PEM file."""
    if isinstance(pem, bytes):
        return pem
    if isinstance(pem, str) and pem.lstrip().startswith("-----BEGIN"):
        return pem.encode("ascii")
    return Path(pem).read_bytes()


def sign_manifest(manifest_bytes: bytes, private_key_pem: bytes | str | Path) -> bytes:
    """Ed25519 signature (64 bytes) over `manifest_bytes`; write it as manifest.sig."""
    key = serialization.load_pem_private_key(_pem_bytes(private_key_pem), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the signing key must be an Ed25519 private key")
    return key.sign(manifest_bytes)


def load_public_key(public_key_pem: bytes | str | Path) -> Ed25519PublicKey:
    """Parse a trusted Ed25519 public key; `BundleError` if it is not one."""
    try:
        key = serialization.load_pem_public_key(_pem_bytes(public_key_pem))
    except (OSError, ValueError, TypeError) as e:
        raise BundleError(f"trusted key is not a readable PEM public key: {e}") from e
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError("trusted key is not an Ed25519 public key")
    return key


def verify_signature(data: bytes, signature: bytes, public_key: Ed25519PublicKey | bytes | str | Path) -> None:
    """Raise `BundleError` unless `signature` is a valid Ed25519 signature of `data` by `public_key`."""
    key = public_key if isinstance(public_key, Ed25519PublicKey) else load_public_key(public_key)
    if len(signature) != SIGNATURE_BYTES:
        raise BundleError(f"signature has {len(signature)} bytes, expected {SIGNATURE_BYTES}")
    try:
        key.verify(signature, data)
    except InvalidSignature as e:
        raise BundleError("signature does not verify with the trusted key") from e
