"""A minimal OLE2 / Compound File Binary (MS-CFB, version 3) writer for test inputs.

No maintained permissively licensed library writes new OLE2 files (olefile only reads and
patches), and the tests need two kinds: Outlook .msg messages and encrypted OOXML containers
(EncryptionInfo + EncryptedPackage streams). Streams under 4096 bytes go to the mini stream
as the format requires; each storage's children form a sorted chain of right siblings (a valid,
if unbalanced, directory tree).
"""

from __future__ import annotations

import itertools
import struct

SECTOR = 512
MINI = 64
CUTOFF = 4096
FREE, END, FATSECT = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD
NOSTREAM = 0xFFFFFFFF


def _pad(data: bytes, size: int) -> bytes:
    return data + b"\0" * (-len(data) % size)


def _order(name: str) -> tuple[int, str]:
    return (len(name), name.upper())


def write_ole(streams: dict[str, bytes]) -> bytes:
    """An OLE2 file holding `streams` ("storage/stream" paths, "/"-separated)."""
    # Directory: entry 0 is the root; storages and streams follow.
    entries: list[dict] = [{"name": "Root Entry", "type": 5, "children": [], "data": b""}]
    index: dict[str, int] = {"": 0}

    def storage(path: str) -> int:
        if path in index:
            return index[path]
        parent_path, _, name = path.rpartition("/")
        parent = storage(parent_path)
        entries.append({"name": name, "type": 1, "children": [], "data": b""})
        index[path] = len(entries) - 1
        entries[parent]["children"].append(index[path])
        return index[path]

    for path, data in streams.items():
        parent_path, _, name = path.rpartition("/")
        parent = storage(parent_path)
        entries.append({"name": name, "type": 2, "children": [], "data": data})
        entries[parent]["children"].append(len(entries) - 1)

    # Place stream data: small streams in the mini stream, big ones in regular sectors.
    mini_stream = b""
    minifat: list[int] = []
    big: list[tuple[int, bytes]] = []
    for i, e in enumerate(entries):
        if e["type"] != 2:
            continue
        data = e["data"]
        if len(data) < CUTOFF:
            if not data:
                e["start"] = END
                continue
            first = len(mini_stream) // MINI
            n = -(-len(data) // MINI)
            minifat += [first + k + 1 for k in range(n - 1)] + [END]
            mini_stream += _pad(data, MINI)
            e["start"] = first
        else:
            big.append((i, data))

    sectors: list[bytes] = []
    fat: list[int] = []

    def chain(payload: bytes) -> int:
        if not payload:
            return END
        first = len(sectors)
        blocks = [payload[k : k + SECTOR] for k in range(0, len(payload), SECTOR)]
        for k, block in enumerate(blocks):
            sectors.append(_pad(block, SECTOR))
            fat.append(first + k + 1 if k < len(blocks) - 1 else END)
        return first

    for i, data in big:
        entries[i]["start"] = chain(data)
    entries[0]["start"] = chain(mini_stream)
    entries[0]["data"] = mini_stream
    minifat_start = chain(b"".join(struct.pack("<I", v) for v in minifat))
    minifat_count = -(-len(minifat) * 4 // SECTOR)

    # Sibling chains sorted as the format compares names.
    for e in entries:
        kids = sorted(e["children"], key=lambda k: _order(entries[k]["name"]))
        e["child"] = kids[0] if kids else NOSTREAM
        for a, b in itertools.pairwise(kids):
            entries[a]["right"] = b

    raw_dir = b""
    for e in entries:
        name = e["name"].encode("utf-16-le") + b"\0\0"
        raw_dir += struct.pack(
            "<64sHBBIII16sIQQIII",
            name,
            len(name),
            e["type"],
            1,  # black
            NOSTREAM,  # left sibling
            e.get("right", NOSTREAM),
            e["child"],
            b"\0" * 16,
            0,
            0,
            0,
            e.get("start", END) if e["type"] != 1 else 0,
            len(e["data"]) if e["type"] != 1 else 0,
            0,
        )
    dir_start = chain(_pad(raw_dir, SECTOR))

    # FAT sectors: enough to describe every sector including themselves.
    n_fat = 1
    while (len(sectors) + n_fat) > n_fat * (SECTOR // 4):
        n_fat += 1
    if n_fat > 109:
        raise ValueError("test OLE file too large for a header-only DIFAT")
    fat_start = len(sectors)
    fat += [FATSECT] * n_fat
    fat += [FREE] * (n_fat * (SECTOR // 4) - len(fat))
    table = b"".join(struct.pack("<I", v) for v in fat)
    for k in range(n_fat):
        sectors.append(table[k * SECTOR : (k + 1) * SECTOR])
    difat = [fat_start + k for k in range(n_fat)] + [FREE] * (109 - n_fat)

    header = struct.pack(
        "<8s16sHHHHH6sIIIIIIIII",
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        b"\0" * 16,
        0x003E,  # minor version
        0x0003,  # major version 3: 512-byte sectors
        0xFFFE,  # little-endian
        9,  # sector shift
        6,  # mini sector shift
        b"\0" * 6,
        0,  # directory sectors (0 for v3)
        n_fat,
        dir_start,
        0,  # transaction
        CUTOFF,
        minifat_start if minifat else END,
        minifat_count,
        END,  # first DIFAT sector
        0,
    ) + b"".join(struct.pack("<I", v) for v in difat)
    return header + b"".join(sectors)
