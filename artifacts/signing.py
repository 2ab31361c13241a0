"""Bundle signatures through OpenSSF model-signing (a Sigstore bundle holding an in-toto statement).

    sign_bundle("qwen3.llmc", "qwen3.llmc.sig", private_key="key.pem")     # offline, a local EC key
    sign_bundle("qwen3.llmc", "qwen3.llmc.sig")                            # keyless: Sigstore, needs network
    verify_signature("qwen3.llmc", "qwen3.llmc.sig", public_key="key.pub")

Before signing or checking a signature the bundle is verified in full (every file against the
manifest, the manifest against its root digest, the plans against the manifest), so a signature
is only ever made over, or accepted for, a bundle whose root covers every byte the runtime
trusts. The statement lists every file of the bundle (manifest.json with its root included) with
its sha256, so the `model_signing verify` command checks an llmc bundle on its own too.
Needs the `sign` extra (`pip install 'llmc[sign]'`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from llmc.errors import BundleError, UserError

from .reader import Bundle

SIGN_EXTRA_MISSING = "signatures need the sign extra: pip install 'llmc[sign]'"


def _model_signing():
    try:
        import model_signing
        from model_signing import hashing, signing, verifying  # noqa: F401
    except ImportError:
        raise UserError(SIGN_EXTRA_MISSING) from None
    return model_signing


def _hashing(ms):
    return ms.hashing.Config().use_file_serialization(hashing_algorithm="sha256", allow_symlinks=False)


def default_signature_path(bundle: str | os.PathLike) -> Path:
    """`<bundle>.sig` beside the bundle (never inside it: that would be a file the manifest does not list)."""
    path = Path(bundle)
    return path.with_name(path.name.rstrip("/") + ".sig")


def sign_bundle(bundle: str | os.PathLike, signature: str | os.PathLike, *, private_key: str | os.PathLike | None = None,
                password: str | None = None) -> str:
    """Verify `bundle` in full, then sign it into `signature` (which must not exist); return its root digest."""
    ms = _model_signing()
    signature = Path(signature)
    if signature.exists() or signature.is_symlink():
        raise UserError(f"{signature}: already exists; remove it or choose another signature file")
    with Bundle.open(bundle, verify="full") as opened:
        if opened.path.resolve() in signature.absolute().resolve().parents:
            raise UserError(f"{signature}: is inside the bundle; write the signature beside it")
        config = ms.signing.Config().set_hashing_config(_hashing(ms))
        try:
            if private_key is not None:
                config.use_elliptic_key_signer(private_key=Path(private_key), password=password)
            else:
                config.use_sigstore_signer()
            tmp = signature.with_name(f".{signature.name}.tmp-{os.getpid()}")
            try:
                config.sign(opened.path, tmp)
                os.link(tmp, signature)  # fails rather than replace a file that appeared meanwhile
            finally:
                tmp.unlink(missing_ok=True)
        except UserError:
            raise
        except FileExistsError:
            raise UserError(f"{signature}: already exists; remove it or choose another signature file") from None
        except Exception as e:  # a bad key file, a wrong password, no network for keyless signing
            raise UserError(f"{signature}: cannot sign: {_one_line(e)}") from None
        return opened.manifest["root_digest"]


def verify_signature(bundle: str | os.PathLike, signature: str | os.PathLike, *,
                     public_key: str | os.PathLike | None = None, identity: str | None = None,
                     oidc_issuer: str | None = None) -> str:
    """Verify `bundle` in full and `signature` over it; return the root digest, or raise BundleError (one line)."""
    _model_signing()
    with Bundle.open(bundle, verify="full") as opened:
        check_signature(opened, signature, public_key=public_key, identity=identity, oidc_issuer=oidc_issuer)
        return opened.manifest["root_digest"]


def check_signature(opened: Bundle, signature: str | os.PathLike, *, public_key: str | os.PathLike | None = None,
                    identity: str | None = None, oidc_issuer: str | None = None) -> None:
    """Check `signature` over a bundle already opened and verified in full."""
    ms = _model_signing()
    signature = Path(signature)
    if not signature.is_file():
        raise UserError(f"{signature}: no such signature file")
    if public_key is None and not (identity and oidc_issuer):
        raise UserError("--signature needs --key PUBLIC_KEY, or --identity and --oidc-issuer for a keyless signature")
    config = ms.verifying.Config().set_hashing_config(_hashing(ms))
    try:
        if public_key is not None:
            config.use_elliptic_key_verifier(public_key=Path(public_key))
        else:
            config.use_sigstore_verifier(identity=identity, oidc_issuer=oidc_issuer)
        config.verify(opened.path, signature)
    except Exception as e:
        raise BundleError(f"{signature}: does not verify for {opened.label}: {_why(str(e))}") from None


def _why(text: str) -> str:
    """model-signing's mismatch list, as the names of the files that differ from the signed ones."""
    if not text.startswith("Signature mismatch"):
        return _one_line(Exception(text))
    parts = []
    for kind, pattern in (("not signed", r"Extra files found in model '[^']*': ([^\"']+)"),
                          ("missing", r"Missing files in model '[^']*': ([^\"']+)")):
        found = re.search(pattern, text)
        if found:
            parts.append(f"{kind}: {found.group(1).strip()}")
    changed = re.findall(r"Hash mismatch for \\?'([^'\\]+)\\?'", text)
    if changed:
        parts.append(f"changed: {', '.join(changed)}")
    return (f"the files differ from the signed ones ({'; '.join(parts or ['unknown'])}): it was made for another "
            "bundle or this one was modified")


def _one_line(e: Exception) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."
