"""A tiny chart canvas: rectangles, lines, 5x7 bitmap text, written as PNG with zlib (no matplotlib).

Enough for the benchmark's bar and line charts; text is upper case.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt

Color = tuple[int, int, int]
BLACK: Color = (30, 30, 30)
GREY: Color = (200, 200, 200)
WHITE: Color = (255, 255, 255)

# 5x7 glyphs, one string per row ("#" = ink).
_GLYPHS = {
    "A": ".###.|#...#|#...#|#####|#...#|#...#|#...#", "B": "####.|#...#|#...#|####.|#...#|#...#|####.",
    "C": ".###.|#...#|#....|#....|#....|#...#|.###.", "D": "####.|#...#|#...#|#...#|#...#|#...#|####.",
    "E": "#####|#....|#....|####.|#....|#....|#####", "F": "#####|#....|#....|####.|#....|#....|#....",
    "G": ".###.|#...#|#....|#.###|#...#|#...#|.####", "H": "#...#|#...#|#...#|#####|#...#|#...#|#...#",
    "I": ".###.|..#..|..#..|..#..|..#..|..#..|.###.", "J": "..###|...#.|...#.|...#.|...#.|#..#.|.##..",
    "K": "#...#|#..#.|#.#..|##...|#.#..|#..#.|#...#", "L": "#....|#....|#....|#....|#....|#....|#####",
    "M": "#...#|##.##|#.#.#|#.#.#|#...#|#...#|#...#", "N": "#...#|#...#|##..#|#.#.#|#..##|#...#|#...#",
    "O": ".###.|#...#|#...#|#...#|#...#|#...#|.###.", "P": "####.|#...#|#...#|####.|#....|#....|#....",
    "Q": ".###.|#...#|#...#|#...#|#.#.#|#..#.|.##.#", "R": "####.|#...#|#...#|####.|#.#..|#..#.|#...#",
    "S": ".####|#....|#....|.###.|....#|....#|####.", "T": "#####|..#..|..#..|..#..|..#..|..#..|..#..",
    "U": "#...#|#...#|#...#|#...#|#...#|#...#|.###.", "V": "#...#|#...#|#...#|#...#|#...#|.#.#.|..#..",
    "W": "#...#|#...#|#...#|#.#.#|#.#.#|#.#.#|.#.#.", "X": "#...#|#...#|.#.#.|..#..|.#.#.|#...#|#...#",
    "Y": "#...#|#...#|.#.#.|..#..|..#..|..#..|..#..", "Z": "#####|....#|...#.|..#..|.#...|#....|#####",
    "0": ".###.|#...#|#..##|#.#.#|##..#|#...#|.###.", "1": "..#..|.##..|..#..|..#..|..#..|..#..|.###.",
    "2": ".###.|#...#|....#|...#.|..#..|.#...|#####", "3": "####.|....#|....#|.###.|....#|....#|####.",
    "4": "...#.|..##.|.#.#.|#..#.|#####|...#.|...#.", "5": "#####|#....|####.|....#|....#|#...#|.###.",
    "6": "..##.|.#...|#....|####.|#...#|#...#|.###.", "7": "#####|....#|...#.|..#..|.#...|.#...|.#...",
    "8": ".###.|#...#|#...#|.###.|#...#|#...#|.###.", "9": ".###.|#...#|#...#|.####|....#|...#.|.##..",
    " ": ".....|.....|.....|.....|.....|.....|.....", ".": ".....|.....|.....|.....|.....|.##..|.##..",
    ",": ".....|.....|.....|.....|.##..|..#..|.#...", "%": "##...|##..#|...#.|..#..|.#...|#..##|...##",
    "/": ".....|....#|...#.|..#..|.#...|#....|.....", "(": "...#.|..#..|.#...|.#...|.#...|..#..|...#.",
    ")": ".#...|..#..|...#.|...#.|...#.|..#..|.#...", "-": ".....|.....|.....|#####|.....|.....|.....",
    "=": ".....|.....|#####|.....|#####|.....|.....", ":": ".....|.##..|.##..|.....|.##..|.##..|.....",
    "<": "...#.|..#..|.#...|#....|.#...|..#..|...#.", ">": ".#...|..#..|...#.|....#|...#.|..#..|.#...",
    "+": ".....|..#..|..#..|#####|..#..|..#..|.....", "_": ".....|.....|.....|.....|.....|.....|#####",
    "'": "..#..|..#..|.#...|.....|.....|.....|.....", "?": ".###.|#...#|....#|...#.|..#..|.....|..#..",
}  # fmt: skip
_FONT = {ch: np.array([[c == "#" for c in row] for row in rows.split("|")]) for ch, rows in _GLYPHS.items()}


class Canvas:
    """An RGB image to draw on; (0, 0) is the top left."""

    def __init__(self, width: int, height: int, background: Color = WHITE) -> None:
        self.width, self.height = width, height
        self.pixels: npt.NDArray[np.uint8] = np.empty((height, width, 3), dtype=np.uint8)
        self.pixels[:] = background

    def rect(self, x0: float, y0: float, x1: float, y1: float, color: Color) -> None:
        """Fill the rectangle between two corners (any order), clipped to the canvas."""
        xa, xb = sorted((round(x0), round(x1)))
        ya, yb = sorted((round(y0), round(y1)))
        xa, ya = max(xa, 0), max(ya, 0)
        xb, yb = min(xb, self.width), min(yb, self.height)
        if xa < xb and ya < yb:
            self.pixels[ya:yb, xa:xb] = color

    def line(self, x0: float, y0: float, x1: float, y1: float, color: Color, width: int = 2) -> None:
        """A straight line `width` pixels thick."""
        steps = max(1, int(max(abs(x1 - x0), abs(y1 - y0))))
        half = width / 2
        for i in range(steps + 1):
            x, y = x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps
            self.rect(x - half, y - half, x + half, y + half, color)

    def text(
        self, x: float, y: float, text: str, color: Color = BLACK, scale: int = 2, anchor: str = "left"
    ) -> None:
        """Upper-case text with its top at `y`; `anchor` left, center or right of `x`."""
        text = text.upper()
        width = self.text_width(text, scale)
        x = x - width / 2 if anchor == "center" else x - width if anchor == "right" else x
        for i, ch in enumerate(text):
            glyph = _FONT.get(ch, _FONT["?"])
            ys, xs = np.nonzero(glyph)
            for gy, gx in zip(ys, xs, strict=True):
                left = x + (i * 6 + gx) * scale
                self.rect(left, y + gy * scale, left + scale, y + (gy + 1) * scale, color)

    @staticmethod
    def text_width(text: str, scale: int = 2) -> int:
        """Pixels `text` takes at `scale`."""
        return max(0, len(text) * 6 - 1) * scale

    def save(self, path: Path) -> Path:
        """Write the canvas as an 8-bit RGB PNG."""
        rows = b"".join(b"\x00" + self.pixels[y].tobytes() for y in range(self.height))

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9))
        path.write_bytes(png + chunk(b"IEND", b""))
        return path
