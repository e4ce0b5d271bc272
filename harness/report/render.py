"""The board as Markdown (also the terminal's), CSV, self-contained HTML and LaTeX, and written as files."""

import base64
import html as html_lib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from harness.record.results import write_text_atomic

if TYPE_CHECKING:
    from harness.report.board import Board


def _lines(board: "Board") -> list[str]:
    """The legend, after the line that accounts for every record file read."""
    accounting = getattr(board, "accounting", "")
    return [f"records: {accounting}", *board.legend] if accounting else list(board.legend)


def markdown(board: "Board", images: Iterable[str | Path] = ()) -> str:
    """The board as Markdown: legend lines, the table, then each view. Also what the terminal shows."""
    parts = ["\n".join(f"- {line}" for line in _lines(board)), board.table.to_markdown(disable_numparse=True)]
    if getattr(board, "skipped", None):
        parts.append("Not on the board:\n" + "\n".join(f"- {path}: {why}" for path, why in board.skipped))
    for table, lines in board.views.values():
        parts += ["\n".join(f"- {line}" for line in lines), table.to_markdown(disable_numparse=True)]
    parts += [f"![{Path(p).stem}]({p})" for p in images]
    return "\n\n".join(parts)


def csv(board: "Board") -> str:
    """One row per cell with every number behind the table (the wide table is a view of this)."""
    return board.long.to_csv(index=False)


STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}"
    "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right;white-space:nowrap}"
    "th:first-child,td:first-child{text-align:left}thead th{background:#f3f3f3}li{margin:2px 0}"
    "img{max-width:100%;display:block;margin:1em 0}"
)


def html(board: "Board", images: Iterable[str | Path] = ()) -> str:
    """One self-contained file: inline CSS, plots embedded as data URIs, no network references."""

    def section(table: pd.DataFrame, lines: list[str]) -> str:
        items = "".join(f"<li>{html_lib.escape(line)}</li>" for line in lines)
        return f"<ul>{items}</ul>{table.to_html(escape=True, border=0, na_rep='')}"

    body = [section(board.table, _lines(board))]
    if getattr(board, "skipped", None):
        items = "".join(f"<li>{html_lib.escape(f'{p}: {why}')}</li>" for p, why in board.skipped)
        body.append(f"<h2>Not on the board</h2><ul>{items}</ul>")
    body += [f"<h2>{html_lib.escape(name)}</h2>{section(t, lines)}" for name, (t, lines) in board.views.items()]
    for p in images:
        data = base64.b64encode(Path(p).read_bytes()).decode()
        body.append(f'<img alt="{html_lib.escape(Path(p).stem)}" src="data:image/png;base64,{data}">')
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>archbench leaderboard</title>'
        f"<style>{STYLE}</style></head><body><h1>archbench leaderboard</h1>{''.join(body)}</body></html>\n"
    )


TEX = {"±": r"$\pm$", "†": r"$^\dagger$", "–": "--", "∈": r"$\in$", "×": r"$\times$", "≥": r"$\geq$"}


def _tex(text: str) -> str:
    for a, b in TEX.items():
        text = text.replace(a, b)
    return text


def latex(board: "Board", images: Iterable[str | Path] = ()) -> str:
    """The tables as booktabs LaTeX (pandas Styler), the legend as comments above each."""

    def one(table: pd.DataFrame, lines: list[str]) -> str:
        styler = table.rename_axis(None).style.format(escape="latex").format_index(escape="latex", axis=0)
        styler = styler.format_index(escape="latex", axis=1)
        body = styler.to_latex(hrules=True, column_format="l" + "r" * len(table.columns))
        return "\n".join(f"% {_tex(line)}" for line in lines) + "\n" + _tex(body)

    skipped = "".join(f"% not on the board: {_tex(f'{p}: {why}')}\n" for p, why in getattr(board, "skipped", []))
    return skipped + "\n".join(one(t, lines) for t, lines in [(board.table, _lines(board)), *board.views.values()])


def write(
    board: "Board", out_dir: Path, formats: Iterable[str] = ("md", "csv"), plots: Path | None = None
) -> list[Path]:
    """Write `board` (harness/report/board.py) as leaderboard.<format> for each format (md, csv, html, tex) into
    out_dir, atomically; with csv also leaderboard_records.csv (every record file read, and what became of it)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    images = sorted(Path(plots).glob("*.png")) if plots else []
    written = []
    for fmt in formats:
        path = out_dir / f"leaderboard.{fmt}"
        if fmt == "csv":
            write_text_atomic(path, csv(board))
            if board.files is not None:  # every record file read, and what became of it
                write_text_atomic(out_dir / "leaderboard_records.csv", board.files.to_csv(index=False))
                written.append(out_dir / "leaderboard_records.csv")
        elif fmt == "md":  # images linked relative to the file, so the folder can move
            write_text_atomic(path, markdown(board, [os.path.relpath(p, out_dir) for p in images]) + "\n")
        else:
            write_text_atomic(path, {"html": html, "tex": latex}[fmt](board, images))
        written.append(path)
    return written
