#!/usr/bin/env python3
"""Makes the PNG fixtures of Tests/MoireStorageTests (zlib's own encoder, every row filter type).
Pixel (x, y) of plane value v(x, y) = (x*37 + y*101 + x*y) mod 2^bits; colour files hold (v, v//2, v//4)."""
import struct, zlib

def chunk(t, body):
    return struct.pack(">I", len(body)) + t + body + struct.pack(">I", zlib.crc32(t + body) & 0xffffffff)

def filt(ftype, row, prev, bpp):
    out = bytearray()
    for i, v in enumerate(row):
        a = row[i - bpp] if i >= bpp else 0
        b = prev[i] if prev else 0
        c = prev[i - bpp] if (prev and i >= bpp) else 0
        if ftype == 0: p = 0
        elif ftype == 1: p = a
        elif ftype == 2: p = b
        elif ftype == 3: p = (a + b) // 2
        else:
            pp = a + b - c; pa, pb, pc = abs(pp - a), abs(pp - b), abs(pp - c)
            p = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
        out.append((v - p) & 0xff)
    return bytes([ftype]) + bytes(out)

def png(path, w, h, bits, colour, strategy):
    chans = {0: 1, 2: 3}[colour]
    bpp = chans * bits // 8
    raw, prev = bytearray(), None
    for y in range(h):
        row = bytearray()
        for x in range(w):
            v = (x * 37 + y * 101 + x * y) % (1 << bits)
            for s in ([v] if chans == 1 else [v, v // 2, v // 4]):
                row += s.to_bytes(bits // 8, "big")
        raw += filt(y % 5, row, prev, bpp)
        prev = row
    co = zlib.compressobj(9, zlib.DEFLATED, 15, 9, strategy)
    data = co.compress(bytes(raw)) + co.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, bits, colour, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data[:len(data) // 2]) + chunk(b"IDAT", data[len(data) // 2:]) + chunk(b"IEND", b""))

png("grey16-dynamic.png", 40, 30, 16, 0, zlib.Z_DEFAULT_STRATEGY)
png("grey8-fixed.png", 33, 17, 8, 0, zlib.Z_FIXED)
png("rgb8-dynamic.png", 20, 12, 8, 2, zlib.Z_DEFAULT_STRATEGY)
