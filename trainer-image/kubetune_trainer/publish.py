"""The one writer of alias pointers: which stored model an alias (`frigo`) names now.

Serving reads `<models volume>/aliases/<alias>.json` (and, for S3 outputs,
`s3://<bucket>/<prefix>/aliases/<alias>.json`):

    {"alias", "model", "path" (claim-relative, models/<name>) or "uri", "base_model",
     "format", "version" (previous + 1), "updated" (RFC 3339 UTC)}

On the volume the new pointer is written to `.<alias>.json.tmp<random>` in the same directory,
fsynced, renamed over the old one (`os.replace`, atomic on one filesystem) and the directory
fsynced: a reader sees the old pointer or the new one, never half of one. Writers of one
alias take turns through an advisory lock (`.<alias>.lock`), so versions never repeat. On S3
the pointer is one object PUT after the model's manifest was seen (a PUT is atomic: readers
get the old or the new object); nothing is written after it.

A pointer only ever names a complete model: its `kubetune-model.json` must exist first.

    python -m kubetune_trainer.publish --models-dir D --alias A --model NAME --path P \\
        --format F [--base-model B]
    python -m kubetune_trainer.publish --s3-prefix s3://bucket/prefix --alias A --model NAME \\
        --uri s3://bucket/prefix/NAME --format F [--base-model B] [--endpoint-url U]

Prints the pointer written (JSON), also into the termination message file when there is one
(the operator's publish Job reads its version there), and exits 0; 42 on bad input (nothing
written), 75 when storage failed and a retry may help. In the trainer image the same command
is `kubetune-trainer publish ...`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from kubetune_crd import names
from kubetune_crd.promotion import ALIAS_PATTERN, ALIASES_DIR, pointer_filename
from kubetune_crd.trainer_contract import TERMINATION_ENV, TERMINATION_MESSAGE_PATH, ExitCode

from kubetune_trainer.durable import fsync_dir
from kubetune_trainer.errors import BadInputError, RetryableError

FORMATS = (names.FORMAT_LORA, names.FORMAT_LORA + names.MERGED_SUFFIX, names.FORMAT_FULL)


def check_alias(alias: str) -> str:
    if not re.match(ALIAS_PATTERN, alias):
        raise BadInputError(f"invalid alias {alias!r}: a DNS label (a-z, 0-9, '-', <= 63)")
    return alias


def _check_model(model: str, fmt: str) -> None:
    if not re.match(names.MODEL_NAME_PATTERN, model):
        raise BadInputError(f"invalid model name {model!r}")
    if fmt not in FORMATS:
        raise BadInputError(f"invalid format {fmt!r}: one of {', '.join(FORMATS)}")


def _check_relative_path(path: str) -> str:
    parts = PurePosixPath(path).parts
    if not parts or path.startswith("/") or ".." in parts or parts[0] == ALIASES_DIR:
        raise BadInputError(f"invalid model path {path!r}: relative to the models volume")
    return path


def pointer_document(
    alias: str,
    model: str,
    fmt: str,
    version: int,
    *,
    path: str | None = None,
    uri: str | None = None,
    base_model: str | None = None,
) -> dict[str, Any]:
    """The pointer's JSON object (`path` for a model on the volume, else `uri`)."""
    doc: dict[str, Any] = {"alias": alias, "model": model}
    doc.update({"path": path} if path is not None else {"uri": uri})
    doc.update(
        {
            "base_model": base_model,
            "format": fmt,
            "version": version,
            "updated": names.now_rfc3339(),
        }
    )
    return doc


def _previous_version(raw: bytes | None) -> int:
    """The version of the pointer being replaced (0: none, or unreadable)."""
    if raw is None:
        return 0
    try:
        version = json.loads(raw).get("version", 0)
    except (ValueError, AttributeError):
        return 0
    return version if isinstance(version, int) and version >= 0 else 0


# -- the models volume ------------------------------------------------------------------------
@contextlib.contextmanager
def _alias_lock(aliases: Path, alias: str) -> Iterator[None]:
    fd = os.open(aliases / f".{alias}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_atomically(target: Path, body: bytes) -> None:
    """Temporary file in the same directory, fsync, rename over `target`, fsync the directory."""
    tmp = target.parent / f".{target.name}.tmp{secrets.token_hex(6)}"
    try:
        with tmp.open("xb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(target)  # os.replace: atomic on one filesystem
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def publish_volume(
    models_dir: Path, alias: str, model: str, path: str, fmt: str, base_model: str | None = None
) -> dict[str, Any]:
    """Point `alias` at the model at `models_dir/path` (claim-relative `path`)."""
    check_alias(alias)
    _check_model(model, fmt)
    _check_relative_path(path)
    if not (models_dir / path / names.MODEL_MANIFEST).is_file():
        raise BadInputError(f"no complete model at {path} ({names.MODEL_MANIFEST} missing)")
    aliases = models_dir / ALIASES_DIR
    try:
        aliases.mkdir(parents=True, exist_ok=True)
        target = aliases / pointer_filename(alias)
        with _alias_lock(aliases, alias):
            try:
                previous: bytes | None = target.read_bytes()
            except FileNotFoundError:
                previous = None
            doc = pointer_document(
                alias, model, fmt, _previous_version(previous) + 1, path=path, base_model=base_model
            )
            write_atomically(target, (json.dumps(doc, indent=1) + "\n").encode("utf-8"))
    except OSError as exc:
        raise RetryableError(f"cannot write the pointer of {alias}: {exc}") from None
    return doc


# -- S3 -----------------------------------------------------------------------------------------
def s3_pointer_key(prefix_uri: str, alias: str) -> tuple[str, str]:
    """(bucket, key) of `<prefix>/aliases/<alias>.json`."""
    from kubetune_trainer.sources import split_s3_uri

    bucket, prefix = split_s3_uri(prefix_uri.rstrip("/"))
    key = "/".join(p for p in (prefix, ALIASES_DIR, pointer_filename(alias)) if p)
    return bucket, key


def publish_s3(
    prefix_uri: str,
    alias: str,
    model: str,
    uri: str,
    fmt: str,
    base_model: str | None = None,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
) -> dict[str, Any]:
    """Point `alias` at the S3 model `uri`: its manifest must exist; the pointer is PUT last.
    Concurrent publishers of one alias are not serialised here (the operator runs one publish
    at a time per alias)."""
    from kubetune_trainer.sources import classify_s3_error, s3_client, split_s3_uri

    check_alias(alias)
    _check_model(model, fmt)
    model_bucket, model_key = split_s3_uri(uri.rstrip("/"))
    bucket, key = s3_pointer_key(prefix_uri, alias)
    client = s3_client(endpoint_url, region)
    try:
        client.head_object(Bucket=model_bucket, Key=f"{model_key}/{names.MODEL_MANIFEST}")
    except Exception as exc:
        error = classify_s3_error(exc, f"model {uri}")
        if isinstance(error, BadInputError):
            missing = f"no complete model at {uri} ({names.MODEL_MANIFEST} missing)"
            raise BadInputError(missing) from None
        raise error from None
    try:
        try:
            previous: bytes | None = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except client.exceptions.NoSuchKey:
            previous = None
        doc = pointer_document(
            alias, model, fmt, _previous_version(previous) + 1, uri=uri, base_model=base_model
        )
        client.put_object(
            Bucket=bucket,
            Key=key,
            Body=(json.dumps(doc, indent=1) + "\n").encode("utf-8"),
            ContentType="application/json",
        )
    except Exception as exc:
        raise classify_s3_error(exc, f"pointer of {alias}") from None
    return doc


# -- command line -------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kubetune_trainer.publish", description="Point an alias at a model."
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--models-dir", type=Path, help="The models volume's mount.")
    where.add_argument("--s3-prefix", help="s3://bucket/prefix holding the models.")
    parser.add_argument("--alias", required=True)
    parser.add_argument("--model", required=True, help="The model's name.")
    parser.add_argument("--path", help="Claim-relative model path (models/<name>), volume only.")
    parser.add_argument("--uri", help="s3:// URI of the model, S3 only.")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--base-model", default=None)
    parser.add_argument("--endpoint-url", default=None)
    parser.add_argument("--region", default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.models_dir is not None:
            if not args.path:
                raise BadInputError("--path is required with --models-dir")
            doc = publish_volume(
                args.models_dir, args.alias, args.model, args.path, args.format, args.base_model
            )
        else:
            if not args.uri:
                raise BadInputError("--uri is required with --s3-prefix")
            doc = publish_s3(
                args.s3_prefix,
                args.alias,
                args.model,
                args.uri,
                args.format,
                args.base_model,
                endpoint_url=args.endpoint_url,
                region=args.region,
            )
    except BadInputError as exc:
        print(f"publish: {exc}", file=sys.stderr)
        return int(ExitCode.BAD_INPUT)
    except RetryableError as exc:
        print(f"publish: {exc}", file=sys.stderr)
        return int(ExitCode.RETRYABLE)
    print(json.dumps(doc))
    _termination_message(json.dumps(doc))
    return 0


def _termination_message(body: str) -> None:
    """The pointer where Kubernetes reads a container's last word (best effort)."""
    target = Path(os.environ.get(TERMINATION_ENV) or TERMINATION_MESSAGE_PATH)
    if not target.exists():
        return  # not in a container
    with contextlib.suppress(OSError):
        target.write_text(body, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
