"""The reader's edges: every mismatch `llmc verify` reports, word for word with its file and kind; a
manifest that is not canonical; files that cannot be read or are dangling links; which files are plans;
and what each refusal of a part says."""

import gc
import json
import os
import pathlib
import shutil
import tempfile

import pytest
from bundle_samples import (
    KERNEL_BYTES,
    KERNEL_ID,
    KERNEL_INDEX,
    MANIFEST_FIELDS,
    PLAN,
    fresh,
    write_bundle,
)
from llmc.artifacts import Bundle, BundleWriter, dumps, pack, verify_bundle
from llmc.artifacts import reader as reader_module
from llmc.artifacts.reader import Mismatch
from llmc.errors import BundleError

MALFORMED = "the bundle is malformed: rebuild it with llmc build"


@pytest.fixture
def bundle(tmp_path):
    out = tmp_path / "b.llmc"
    write_bundle(out)
    return out


def test_every_mismatch_word_for_word(bundle):
    (bundle / "notes.txt").write_text("hi")
    (bundle / "impls.lock.json").unlink()
    (bundle / "plans/decode_b2.json").write_bytes(b"{}\n")
    weights = bundle / "weights/model.safetensors"
    size = weights.stat().st_size
    weights.write_bytes(b"X" + weights.read_bytes()[1:])
    assert verify_bundle(bundle).mismatches == [
        Mismatch("impls.lock.json", "missing", "impls.lock.json: listed in the manifest but missing; the bundle is "
                 "incomplete: rebuild it or copy it again"),
        Mismatch("notes.txt", "extra", "notes.txt: not listed in the manifest; something was added to the bundle: "
                 "remove the file or rebuild the bundle"),
        Mismatch("plans/decode_b2.json", "size", f"plans/decode_b2.json: 3 bytes, the manifest says "
                 f"{json.loads((bundle / 'manifest.json').read_bytes())['files']['plans/decode_b2.json']['size']}; "
                 "the bundle was modified or truncated: rebuild it or copy it again"),
        Mismatch("weights/model.safetensors", "sha256", "weights/model.safetensors: sha256 does not match the "
                 "manifest; the bundle was modified or corrupted: rebuild it or copy it again"),
    ]
    assert weights.stat().st_size == size


def test_an_edited_manifest_is_named_as_the_file_at_fault(bundle):
    manifest = json.loads((bundle / "manifest.json").read_bytes())
    manifest["llmc_version"] = "9.9.9"
    (bundle / "manifest.json").write_bytes(dumps(manifest))
    assert verify_bundle(bundle).mismatches == [Mismatch(
        "manifest.json", "root_digest", "manifest.json: root_digest does not match the manifest; the manifest was "
        "edited: rebuild the bundle")]


def test_a_manifest_not_in_canonical_form_is_refused(bundle):
    manifest = json.loads((bundle / "manifest.json").read_bytes())
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=1))  # same content: the root digest holds
    message = ("manifest.json: is not canonical JSON (sorted keys, no spaces); the manifest was edited: rebuild "
               "the bundle")
    assert verify_bundle(bundle).mismatches == [Mismatch("manifest.json", "canonical", message)]
    with pytest.raises(BundleError) as e:
        Bundle.open(bundle, verify="fast")
    assert str(e.value) == f"{bundle}: {message}"


def test_a_bundle_made_from_a_manifest_is_canonical(bundle):
    manifest = json.loads((bundle / "manifest.json").read_bytes())
    assert Bundle(bundle, manifest, bundle).check().ok  # no bytes given: the manifest's canonical bytes


def test_each_unreadable_file_is_a_mismatch_and_the_rest_are_still_checked(bundle, monkeypatch):
    real = reader_module.sha256_file

    def sha256_file(path):
        if path.name in ("impls.lock.json", "index.json"):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(reader_module, "sha256_file", sha256_file)
    weights = bundle / "weights/model.safetensors"
    weights.write_bytes(b"X" + weights.read_bytes()[1:])
    assert verify_bundle(bundle).mismatches == [
        Mismatch("impls.lock.json", "unreadable", "impls.lock.json: cannot be read (Permission denied); fix its "
                 "permissions or copy the bundle again"),
        Mismatch("kernels/index.json", "unreadable", "kernels/index.json: cannot be read (Permission denied); fix its "
                 "permissions or copy the bundle again"),
        Mismatch("weights/model.safetensors", "sha256", "weights/model.safetensors: sha256 does not match the "
                 "manifest; the bundle was modified or corrupted: rebuild it or copy it again"),
    ]


def test_dangling_links_are_not_files(bundle):
    for folder in ("", "plans", "kernels", "weights", "tokenizer"):
        for name in ("a", "m", "z"):  # around the real files, whatever order the directory lists them in
            (bundle / folder / f"{name}.dangling").symlink_to(bundle / "nowhere")
    assert verify_bundle(bundle).ok


def test_the_report_says_what_was_checked(bundle):
    report = verify_bundle(bundle, full=False)
    manifest = json.loads((bundle / "manifest.json").read_bytes())
    assert report.source == bundle and report.full is False and report.ok
    assert (report.format_version, report.target, report.root_digest) == (2, manifest["target"], manifest["root_digest"])
    assert verify_bundle(bundle).full is True


def test_plans_are_the_json_files_directly_under_plans(tmp_path):
    out = tmp_path / "b.llmc"
    write_bundle(out, extra={"plans/sub/decode_b4.json": b"{}", "plans/.json": b"{}", "plans/notes.txt": b"",
                             "plans.json": b"{}"})
    with Bundle.open(out, verify="none") as b:
        assert b.plans() == ["decode_b2", "prefill_t16"]
        with pytest.raises(BundleError) as e:
            b.plan("sub/decode_b4")
        assert str(e.value) == f"{out}: has no plan 'sub/decode_b4'; it has decode_b2, prefill_t16"


def test_a_bundle_without_plans_has_none(tmp_path):
    with BundleWriter(tmp_path / "cpu.llmc") as w:
        w.write_json("impls.lock.json", {"nodes": {}})
        w.commit({**fresh(MANIFEST_FIELDS), "target": {"name": "cpu", "backend": "cpu", "arch": None, "warp_size": 1}})
    with Bundle.open(tmp_path / "cpu.llmc", verify="none") as b, pytest.raises(BundleError) as e:
        b.plan("decode_b2")
    assert str(e.value) == f"{tmp_path / 'cpu.llmc'}: has no plan 'decode_b2'; it has none"


def test_a_listed_file_that_went_missing_or_is_not_json(bundle):
    with Bundle.open(bundle, verify="none") as b:
        (bundle / "impls.lock.json").unlink()
        with pytest.raises(BundleError) as e:
            b.lock()
        assert str(e.value) == (f"{bundle}: impls.lock.json is listed in the manifest but missing; the bundle is "
                                "incomplete: rebuild it or copy it again")
        (bundle / "plans/decode_b2.json").write_bytes(b"{not json")
        with pytest.raises(BundleError) as e:
            b.plan("decode_b2")
        assert str(e.value).startswith(f"{bundle}: plans/decode_b2.json: invalid JSON")
        assert str(e.value).endswith(MALFORMED)


def test_a_kernel_file_the_manifest_does_not_list(tmp_path):
    index = fresh(KERNEL_INDEX)
    index["kernels"][KERNEL_ID]["file"] = "kernels/other.cubin"
    out = tmp_path / "b.llmc"
    with BundleWriter(out) as w:
        w.write_json("impls.lock.json", {"nodes": {}})
        w.write_json("kernels/index.json", index)
        w.commit(fresh(MANIFEST_FIELDS))
    with Bundle.open(out, verify="none") as b, pytest.raises(BundleError) as e:
        b.kernel_index()
    assert str(e.value) == (f"{out}: kernels/index.json: field 'kernels[{KERNEL_ID!r}].file' names kernels/other.cubin, "
                            f"which the manifest does not list; {MALFORMED}")


def test_a_bundle_object_over_a_directory_never_removes_it(bundle):
    manifest = json.loads((bundle / "manifest.json").read_bytes())
    b = Bundle(bundle, manifest, bundle)
    b.close()
    del b
    gc.collect()
    assert (bundle / "manifest.json").is_file()


def test_check_hashes_by_default(bundle):
    weights = bundle / "weights/model.safetensors"
    weights.write_bytes(b"X" + weights.read_bytes()[1:])
    with Bundle.open(bundle, verify="none") as b:
        assert [m.kind for m in b.check().mismatches] == ["sha256"] and b.check().full is True


def test_an_archives_extraction_already_gone_closes_quietly(bundle, tmp_path):
    b = Bundle.open(pack(bundle, tmp_path / "b.tar"))
    shutil.rmtree(b.path)
    b.close()


def test_an_archive_whose_manifest_is_refused_after_extraction_leaves_nothing(bundle, tmp_path, monkeypatch):
    made = []
    real = tempfile.mkdtemp
    monkeypatch.setattr(reader_module.tempfile, "mkdtemp", lambda **kw: made.append(real(**kw)) or made[-1])
    archive = pack(bundle, tmp_path / "b.tar")

    def refuse(root, label):
        raise BundleError(f"{label}: refused")

    monkeypatch.setattr(reader_module, "_load_manifest", refuse)
    with pytest.raises(BundleError, match="refused"):
        Bundle.open(archive)
    assert len(made) == 1 and not os.path.exists(made[0])


def test_an_unreadable_manifest_or_part_is_named(bundle, monkeypatch):
    real = pathlib.Path.read_bytes
    unreadable = set()

    def read_bytes(path):
        if path.name in unreadable:
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(pathlib.Path, "read_bytes", read_bytes)
    with Bundle.open(bundle, verify="none") as b:
        unreadable.add("impls.lock.json")
        with pytest.raises(BundleError) as e:
            b.lock()
        assert str(e.value) == f"{bundle}: impls.lock.json: cannot be read (Permission denied); check the bundle's permissions"
    unreadable.add("manifest.json")
    with pytest.raises(BundleError) as e:
        Bundle.open(bundle, verify="none")
    assert str(e.value) == f"{bundle}: manifest.json: cannot be read (Permission denied); check the bundle's permissions"


def test_a_manifest_of_the_limit_is_read_and_one_byte_over_is_refused(bundle, monkeypatch):
    size = (bundle / "manifest.json").stat().st_size
    monkeypatch.setattr(reader_module, "MAX_MANIFEST", size)
    Bundle.open(bundle, verify="none").close()
    monkeypatch.setattr(reader_module, "MAX_MANIFEST", size - 1)
    with pytest.raises(BundleError) as e:
        Bundle.open(bundle, verify="none")
    assert str(e.value) == f"{bundle}: manifest.json is over {size - 1} bytes; {MALFORMED}"


def test_a_newer_format_says_upgrade_whatever_its_fields(bundle):
    (bundle / "manifest.json").write_bytes(dumps({"format_version": 3, "layout": "new"}))
    with pytest.raises(BundleError) as e:
        Bundle.open(bundle, verify="none")
    assert str(e.value) == f"{bundle}: bundle format 3 is newer than this llmc (reads 2): upgrade llmc"


def test_a_plan_step_without_launches(tmp_path):
    plan = fresh(PLAN)
    del plan["steps"][0]["launches"]
    out = tmp_path / "b.llmc"
    with BundleWriter(out) as w:
        w.write_json("plans/decode_b2.json", plan)
        w.write_json("impls.lock.json", {"nodes": {}})
        w.write_json("kernels/index.json", KERNEL_INDEX)
        w.write_bytes(f"kernels/{KERNEL_ID}.cubin", KERNEL_BYTES)
        w.commit(fresh(MANIFEST_FIELDS))
    with Bundle.open(out, verify="none") as b:
        assert b.plan("decode_b2") == plan


def test_open_names_what_it_refuses(tmp_path):
    with pytest.raises(ValueError) as e:
        Bundle.open(tmp_path, verify="sizes")
    assert str(e.value) == "verify must be 'full', 'fast' or 'none', not 'sizes'"
    with pytest.raises(BundleError) as e:
        Bundle.open(tmp_path / "nope")
    assert str(e.value) == (f"{tmp_path / 'nope'}: no such bundle; pass the directory written by llmc build or an "
                            "archive made by llmc pack")
    with pytest.raises(BundleError) as e:
        Bundle.open(tmp_path)
    assert str(e.value) == (f"{tmp_path}: not an llmc bundle (manifest.json is missing); pass the directory written "
                            "by llmc build or an archive made by llmc pack")
    (tmp_path / "x.bin").write_bytes(b"not a tar")
    with pytest.raises(BundleError) as e:
        Bundle.open(tmp_path / "x.bin")
    assert str(e.value) == (f"{tmp_path / 'x.bin'}: is a file but not a bundle archive; pass a bundle directory or an "
                            "archive made by llmc pack")
