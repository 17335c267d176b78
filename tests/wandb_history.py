"""Read the history rows of a wandb offline run file (run-*.wandb): a LevelDB-style log of protobuf records."""
import json
import struct
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7  # ":W&B", a 2-byte magic, a version byte


def records(path: Path):
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", "not a wandb run file"
    offset, pending = HEADER, b""
    while offset + 7 <= len(data):
        if BLOCK - offset % BLOCK < 7:  # a block's tail too short for a record header is padding
            offset += BLOCK - offset % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[offset:offset + 7])
        chunk = data[offset + 7:offset + 7 + length]
        offset += 7 + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            yield pending
            pending = b""


def history(path: Path) -> list[dict]:
    from wandb.proto import wandb_internal_pb2

    rows = []
    for raw in records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows
