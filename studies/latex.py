"""LaTeX formatting for the paper's generated sources: escaping, numbers as printed
(`num`, `signed`, `pval`, `integer`, `ci`), letters-only macro names and the numbers.tex
macros (`Macros`), booktabs tables and labels, and atomic writes under the generated
directory (`Writer`, `write_atomic`).

The formatting functions are pure; only Writer and write_atomic touch files. Used by
studies.findings, studies.paper_tables, studies.paper_gap, studies.paper_sections and
studies.paper. The tables need the LaTeX
packages booktabs and longtable and the `\\fitwidth` command of paper/main.tex.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

# ------------------------------------------------------------------------ formatting


def tex_escape(text: Any) -> str:
    """`text` as LaTeX text: the ten special characters and a few Unicode signs escaped."""
    s = str(text)
    out = []
    for ch in s:
        out.append(_ESCAPES.get(ch, ch))
    s = "".join(out)
    return s.replace("-\\textgreater{}", "$\\to$")


_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "±": r"$\pm$",
    "×": r"$\times$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "≈": r"$\approx$",
    "→": r"$\to$",
    "−": "-",
}


def tt(text: Any) -> str:
    """Typewriter text (names of variants, fields, studies), escaped."""
    return rf"\texttt{{{tex_escape(text)}}}"


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def num(x: Any, digits: int = 2) -> str:
    """A number as printed everywhere in the paper: fixed `digits` decimals, "--" if NaN."""
    return f"{float(x):.{digits}f}" if _finite(x) else "--"


def signed(x: Any, digits: int = 2) -> str:
    return f"{float(x):+.{digits}f}" if _finite(x) else "--"


def pval(p: Any) -> str:
    """A p-value: three decimals, "<0.001" below (LaTeX: `$<$0.001`)."""
    if not _finite(p):
        return "--"
    return "$<$0.001" if float(p) < 0.001 else f"{float(p):.3f}"


def integer(x: Any) -> str:
    if _finite(x):
        return str(int(round(float(x))))
    return r"$\infty$" if str(x) in ("inf", "Infinity") or x == math.inf else "--"


def ci(low: Any, high: Any, digits: int = 2) -> str:
    if not (_finite(low) and _finite(high)):
        return "--"
    return f"[{float(low):.{digits}f}, {float(high):.{digits}f}]"


def _is_true(x: Any) -> bool:
    return str(x).strip().lower() in ("true", "1", "1.0")


def _str(x: Any) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else str(x)


def _n_text(summary: pd.DataFrame) -> str:
    n = summary["n"].astype(float)
    lo, hi = int(n.min()), int(n.max())
    return f"$n = {lo}$" if lo == hi else f"$n = {lo}$--${hi}$ per row"


# ---------------------------------------------------------------------------- macros

_ONES = (
    "Zero One Two Three Four Five Six Seven Eight Nine Ten Eleven Twelve Thirteen Fourteen "
    "Fifteen Sixteen Seventeen Eighteen Nineteen"
).split()
_TENS = ["", "", "Twenty", "Thirty", "Forty", "Fifty", "Sixty", "Seventy", "Eighty", "Ninety"]


def number_words(n: int) -> str:
    """n >= 0 in CamelCase English words: 20 -> Twenty, 110 -> OneHundredTen."""
    if n < 0:
        raise ValueError(f"number_words({n}): allowed values are >= 0")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + (_ONES[n % 10] if n % 10 else "")
    for size, word in (
        (10**9, "Billion"),
        (10**6, "Million"),
        (1000, "Thousand"),
        (100, "Hundred"),
    ):
        if n >= size:
            rest = n % size
            return number_words(n // size) + word + (number_words(rest) if rest else "")
    raise AssertionError  # unreachable


def macro_name(*parts: Any) -> str:
    """A LaTeX macro name of letters only from `parts`: words capitalised, digits spelled out
    (a run with a leading zero digit by digit), "." between digits as "Point":
    ("crop_ablation", "pad_black", "D", 20, "Mean") -> "CropAblationPadBlackDTwentyMean",
    "m0.001" -> "MZeroPointZeroZeroOne"."""
    words = []
    for part in parts:
        for tok in re.findall(r"[A-Za-z]+|\d+|\.", str(part)):
            if tok == ".":
                words.append("Point")
            elif tok.isdigit():
                if len(tok) > 1 and tok[0] == "0":
                    words.append("".join(_ONES[int(d)] for d in tok))
                else:
                    words.append(number_words(int(tok)))
            else:
                words.append(tok[0].upper() + tok[1:])
    name = "".join(words)
    if not name.isalpha():
        raise ValueError(f"cannot make a letters-only macro name from {parts!r}")
    return name


class Macros:
    """The macros of numbers.tex, in definition order; a name defined twice is an error."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.comments: dict[str, str] = {}

    def add(self, parts: Sequence[Any], value: str, comment: str = "") -> str:
        """Define the macro named from `parts` as `value` (LaTeX text); returns its use
        (`\\Name{}`, safe before a space or a letter)."""
        name = macro_name(*parts)
        if name in self.values:
            raise ValueError(f"macro \\{name} defined twice (from {parts!r})")
        self.values[name] = value
        self.comments[name] = comment
        return f"\\{name}{{}}"

    def use(self, parts: Sequence[Any]) -> str:
        name = macro_name(*parts)
        if name not in self.values:
            raise KeyError(f"macro \\{name} is not defined")
        return f"\\{name}{{}}"

    def tex(self) -> str:
        lines = ["% generated by studies.paper: every number of the paper, one macro each", ""]
        for name, value in self.values.items():
            if self.comments[name]:
                lines.append(f"% {self.comments[name]}")
            lines.append(f"\\newcommand{{\\{name}}}{{{value}}}")
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- writing


class Writer:
    """Atomic writes under the generated directory; remembers what it wrote."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.written: set[Path] = set()

    def write(self, relpath: str, data: str | bytes) -> Path:
        path = self.root / relpath
        write_atomic(path, data)
        self.written.add(path.resolve())
        return path

    def copy(self, src: Path, relpath: str) -> Path:
        return self.write(relpath, src.read_bytes())

    def remove_stale(self) -> list[Path]:
        """Delete files under root that this run did not write (and emptied directories)."""
        removed = []
        for path in sorted(self.root.rglob("*"), reverse=True):
            if path.is_file() and path.resolve() not in self.written:
                path.unlink()
                removed.append(path)
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        return removed


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write `data` to `path` through a temporary file in the same directory and a rename,
    so a reader (or an interrupted run) never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------- tables


def latex_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    align: str,
    caption: str,
    label: str,
    long: bool = False,
    size: str = r"\footnotesize",
) -> str:
    """A booktabs table of already-escaped cells: a float scaled down to the text width when
    wider, or a longtable (`long`) that breaks across pages."""
    head = " & ".join(columns) + r" \\"
    body = [" & ".join(r) + r" \\" for r in rows]
    if long:
        return "\n".join(
            [
                "\\begingroup" + size,
                r"\setlength{\tabcolsep}{3pt}",
                rf"\begin{{longtable}}{{{align}}}",
                rf"\caption{{{caption}}}\label{{{label}}}\\",
                r"\toprule",
                head,
                r"\midrule",
                r"\endfirsthead",
                r"\toprule",
                head,
                r"\midrule",
                r"\endhead",
                r"\bottomrule",
                r"\endfoot",
                *body,
                r"\end{longtable}",
                r"\endgroup",
                "",
            ]
        )
    return "\n".join(
        [
            r"\begin{table}[htbp]",
            r"\centering" + size,
            r"\setlength{\tabcolsep}{3pt}",
            rf"\caption{{{caption}}}\label{{{label}}}",
            r"\fitwidth{%",
            rf"\begin{{tabular}}{{{align}}}",
            r"\toprule",
            head,
            r"\midrule",
            *body,
            r"\bottomrule",
            r"\end{tabular}}",
            r"\end{table}",
            "",
        ]
    )


def label(*parts: Any) -> str:
    return "-".join(re.sub(r"[^A-Za-z0-9]+", "-", str(p)).strip("-") for p in parts)
