"""llmc sign / llmc verify --signature: OpenSSF model-signing with a local key, offline."""

import json
import shutil

import pytest
from bundle_samples import write_bundle
from click.testing import CliRunner

from llmc.artifacts import dumps, pack, root_digest
from llmc.cli.main import main

pytest.importorskip("model_signing")
serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")
ec = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.ec")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    pairs = []
    for name in ("signer", "other"):
        key = ec.generate_private_key(ec.SECP256R1())
        private, public = folder / f"{name}.pem", folder / f"{name}.pub"
        private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
        public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
        pairs.append((private, public))
    return pairs


def cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output.strip().splitlines()


@pytest.fixture
def signed(tmp_path, keys):
    bundle = tmp_path / "b.llmc"
    manifest = write_bundle(bundle)
    code, lines = cli("sign", bundle, "--key", keys[0][0])
    assert code == 0, lines
    assert lines == [f"signed {bundle} (root {manifest['root_digest']}) -> {tmp_path / 'b.llmc.sig'}"]
    return bundle, tmp_path / "b.llmc.sig"


def test_sign_then_verify(signed, keys):
    bundle, sig = signed
    assert json.loads(sig.read_text())["mediaType"].startswith("application/vnd.dev.sigstore.bundle")
    code, lines = cli("verify", bundle, "--signature", sig, "--key", keys[0][1])
    assert code == 0, lines
    assert lines[1] == f"signature: {sig} verifies"


def test_a_packed_bundle_verifies_with_the_same_signature(signed, keys, tmp_path):
    bundle, sig = signed
    archive = pack(bundle, tmp_path / "b.tar")
    assert cli("verify", archive, "--signature", sig, "--key", keys[0][1])[0] == 0


def _tamper_weights(bundle):
    path = bundle / "weights/model.safetensors"
    path.write_bytes(path.read_bytes()[:-1] + b"\x01")


def _edit_eos_and_redigest(bundle):  # an edit that re-digests the root: only the signature catches it
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["model"]["eos_token_ids"] = [3]
    manifest["root_digest"] = root_digest(manifest)
    (bundle / "manifest.json").write_bytes(dumps(manifest))


def _edit_max_seq_len(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["build"]["max_seq_len"] = 128
    (bundle / "manifest.json").write_bytes(dumps(manifest))


@pytest.mark.parametrize("tamper, code, words", [
    (_tamper_weights, 1, ("sha256 does not match",)),
    (_edit_max_seq_len, 1, ("root_digest does not match the manifest",)),
    (_edit_eos_and_redigest, 2, ("does not verify", "manifest.json")),
])
def test_tampering_fails_in_one_line(signed, keys, tamper, code, words):
    bundle, sig = signed
    tamper(bundle)
    got, lines = cli("verify", bundle, "--signature", sig, "--key", keys[0][1])
    assert got == code, lines
    text = lines[-1] if code == 1 else lines[0]
    assert (len(lines) == 1) == (code == 2) and all(w in text for w in words), lines


def test_a_signature_for_another_bundle_or_key_fails(signed, keys, tmp_path):
    bundle, sig = signed
    other = tmp_path / "other.llmc"
    write_bundle(other, extra={"selftest.json": b"{}\n"})
    code, lines = cli("verify", other, "--signature", sig, "--key", keys[0][1])
    assert code == 2 and len(lines) == 1 and "does not verify" in lines[0], lines
    code, lines = cli("verify", bundle, "--signature", sig, "--key", keys[1][1])
    assert code == 2 and len(lines) == 1 and "does not verify" in lines[0], lines


def test_sign_refuses_in_one_line_and_writes_nothing(signed, keys, tmp_path):
    bundle, sig = signed
    before = sig.read_bytes()
    cases = [
        (("sign", bundle, "--key", keys[0][0]), "already exists"),  # never replaces a signature
        (("sign", bundle, "--key", keys[0][0], "-o", bundle / "x.sig"), "inside the bundle"),
        (("sign", bundle, "--key", tmp_path / "nope.pem", "-o", tmp_path / "n.sig"), "cannot sign"),
        (("sign", tmp_path / "missing", "--key", keys[0][0]), "no such bundle"),
        (("verify", bundle, "--signature", tmp_path / "none.sig", "--key", keys[0][1]), "no such signature"),
        (("verify", bundle, "--signature", sig), "--key"),
        (("verify", bundle, "--fast", "--signature", sig, "--key", keys[0][1]), "--fast"),
    ]
    for args, word in cases:
        code, lines = cli(*args)
        assert code == 2 and len(lines) == 1 and word in lines[0], (args, lines)
    assert sig.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.llmc", "b.llmc.sig"]
    shutil.rmtree(bundle)
