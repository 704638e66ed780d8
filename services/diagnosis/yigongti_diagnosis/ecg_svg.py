"""Server-side SVG of a 12-lead recording on standard ECG paper.

Paper: 1 mm and 5 mm grid lines at one constant `PX_PER_MM` (the SVG's user
unit is one CSS pixel: width/height equal the viewBox); 25 mm/s and 10 mm/mV
(the standard speed and gain, AHA/ACCF/HRS 2007 Part I). Layout, the usual 3 x 4
with a rhythm strip:

    cal | I   (0-2.5 s)  | aVR (2.5-5 s) | V1 (5-7.5 s) | V4 (7.5-10 s)
    cal | II             | aVL           | V2           | V5
    cal | III            | aVF           | V3           | V6
    cal | II rhythm strip, 10 s = 250 mm

Each row starts with a 1 mV calibration pulse (10 mm tall, 200 ms = 5 mm wide),
and the speed and gain are labelled ("25 mm/s", "10 mm/mV"). A recording
labelled SYNTHETIC says so on the paper.

Traces are drawn from the samples. Per pixel column (0.25 mm = 10 ms at 4
px/mm) the lowest and the highest sample are kept, in time order, at their own
times, plus the window's first and last sample; where a pixel holds two samples or fewer every sample is drawn. So every
peak is drawn at its true height: a trace's drawn height is its mV range x 10
mm exactly. The only change to a sample is a constant per trace: the median of
the drawn window is subtracted so the trace sits on its row's baseline (no
filtering). The first 10 s are drawn (`start_s` picks another window); a
shorter recording leaves the end of the paper empty.

Stable ids and data attributes for measuring in a browser: the root carries
data-px-per-mm, data-mm-per-s and data-mm-per-mv; ``#ecg-grid`` holds
``line.ecg-grid-minor`` and ``line.ecg-grid-major``; traces are
``path#ecg-lead-<lead>`` and ``path#ecg-rhythm-II`` with data-lead, data-start-s,
data-end-s, data-mv-min, data-mv-max, data-offset-mv and data-baseline-y;
``rect#ecg-rhythm-frame`` is the strip's 250 mm; calibration pulses are
``path.ecg-cal`` (``#ecg-cal-0`` … ``#ecg-cal-3``) with data-mv and data-height-mm;
``#ecg-speed`` and ``#ecg-gain`` are the labels. Nothing from the upload but
samples reaches the SVG (lead names and labels are fixed ASCII strings), so
there is nothing to escape.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from .recording import SYNTHETIC, Recording

PX_PER_MM: Final = 4
MM_PER_S: Final = 25.0
MM_PER_MV: Final = 10.0
COLUMN_S: Final = 2.5
RHYTHM_S: Final = 10.0
RHYTHM_LEAD: Final = "II"
LAYOUT: Final = (
    ("I", "aVR", "V1", "V4"),
    ("II", "aVL", "V2", "V5"),
    ("III", "aVF", "V3", "V6"),
)

# Paper geometry in mm (whole 5 mm boxes).
CAL_ZONE_MM: Final = 10.0
TRACE_LEFT_MM: Final = CAL_ZONE_MM
TRACE_WIDTH_MM: Final = RHYTHM_S * MM_PER_S  # 250
TOP_BAND_MM: Final = 10.0
ROW_HEIGHT_MM: Final = 40.0
BASELINE_IN_ROW_MM: Final = 25.0  # room for 2.5 mV up and 1.5 mV down
PAPER_WIDTH_MM: Final = TRACE_LEFT_MM + TRACE_WIDTH_MM + 5.0  # 265
PAPER_HEIGHT_MM: Final = TOP_BAND_MM + 4 * ROW_HEIGHT_MM + 5.0  # 175
CAL_PULSE_MM: Final = (2.5, 5.0)  # starts 2.5 mm into the row, 200 ms = 5 mm wide

GRID_MINOR_COLOUR: Final = "#f4c7c7"
GRID_MAJOR_COLOUR: Final = "#e08a8a"
TRACE_COLOUR: Final = "#000000"


def render(recording: Recording, *, start_s: float = 0.0) -> str:
    width, height = PAPER_WIDTH_MM * PX_PER_MM, PAPER_HEIGHT_MM * PX_PER_MM
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="ecg" width="{_n(width)}" '
        f'height="{_n(height)}" viewBox="0 0 {_n(width)} {_n(height)}" '
        f'data-px-per-mm="{PX_PER_MM}" data-mm-per-s="{_n(MM_PER_S)}" '
        f'data-mm-per-mv="{_n(MM_PER_MV)}" data-sample-rate-hz="{_n(recording.sample_rate_hz)}">',
        f'<rect x="0" y="0" width="{_n(width)}" height="{_n(height)}" fill="#fff"/>',
        _grid(),
        '<g id="ecg-labels" font-family="sans-serif" font-size="12" fill="#000">',
        f'<text id="ecg-speed" x="{_px(TRACE_LEFT_MM)}" y="{_px(7)}">{_n(MM_PER_S)} mm/s</text>',
        f'<text id="ecg-gain" x="{_px(TRACE_LEFT_MM + 25)}" y="{_px(7)}">'
        f'{_n(MM_PER_MV)} mm/mV</text>',
    ]
    if recording.label == SYNTHETIC:
        out.append(f'<text id="ecg-synthetic" x="{_px(TRACE_LEFT_MM + 60)}" y="{_px(7)}" '
                   f'font-weight="bold">SYNTHETIC</text>')
    out.append("</g>")

    out.append(f'<g id="ecg-traces" fill="none" stroke="{TRACE_COLOUR}" stroke-width="1.2" '
               'stroke-linejoin="round">')
    for row, leads in enumerate(LAYOUT):
        baseline = _baseline_mm(row)
        out.append(_cal_pulse(row, baseline))
        for column, lead in enumerate(leads):
            window = (start_s + column * COLUMN_S, start_s + (column + 1) * COLUMN_S)
            x0 = TRACE_LEFT_MM + column * COLUMN_S * MM_PER_S
            out.append(_trace(recording, lead, window, x0, baseline, f"ecg-lead-{lead}"))
            if column:
                out.append(f'<line class="ecg-separator" x1="{_px(x0)}" y1="{_px(baseline - 3)}" '
                           f'x2="{_px(x0)}" y2="{_px(baseline + 3)}"/>')
            out.append(_label(lead, x0, baseline))
    baseline = _baseline_mm(3)
    out.append(_cal_pulse(3, baseline))
    out.append(f'<rect id="ecg-rhythm-frame" x="{_px(TRACE_LEFT_MM)}" '
               f'y="{_px(baseline - BASELINE_IN_ROW_MM)}" width="{_px(TRACE_WIDTH_MM)}" '
               f'height="{_px(ROW_HEIGHT_MM)}" stroke="none" data-seconds="{_n(RHYTHM_S)}" '
               f'data-width-mm="{_n(TRACE_WIDTH_MM)}"/>')
    out.append(_trace(recording, RHYTHM_LEAD, (start_s, start_s + RHYTHM_S), TRACE_LEFT_MM,
                      baseline, f"ecg-rhythm-{RHYTHM_LEAD}"))
    out.append(_label(RHYTHM_LEAD, TRACE_LEFT_MM, baseline))
    out.append("</g></svg>")
    return "\n".join(out)


def _baseline_mm(row: int) -> float:
    return TOP_BAND_MM + row * ROW_HEIGHT_MM + BASELINE_IN_ROW_MM


def _grid() -> str:
    lines = ['<g id="ecg-grid" shape-rendering="crispEdges">']
    for kind, test in (("minor", lambda k: k % 5 != 0), ("major", lambda k: k % 5 == 0)):
        colour = GRID_MINOR_COLOUR if kind == "minor" else GRID_MAJOR_COLOUR
        stroke = 0.5 if kind == "minor" else 1
        lines.append(f'<g class="ecg-grid-{kind}s" stroke="{colour}" stroke-width="{stroke}">')
        for k in range(int(PAPER_WIDTH_MM) + 1):
            if test(k):
                lines.append(f'<line class="ecg-grid-{kind}" x1="{_px(k)}" y1="0" x2="{_px(k)}" '
                             f'y2="{_px(PAPER_HEIGHT_MM)}"/>')
        for k in range(int(PAPER_HEIGHT_MM) + 1):
            if test(k):
                lines.append(f'<line class="ecg-grid-{kind}" x1="0" y1="{_px(k)}" '
                             f'x2="{_px(PAPER_WIDTH_MM)}" y2="{_px(k)}"/>')
        lines.append("</g>")
    lines.append("</g>")
    return "\n".join(lines)


def _cal_pulse(row: int, baseline: float) -> str:
    x0, width = CAL_PULSE_MM
    top = baseline - 1.0 * MM_PER_MV
    d = (f"M{_px(0.5)} {_px(baseline)}H{_px(x0)}V{_px(top)}H{_px(x0 + width)}"
         f"V{_px(baseline)}H{_px(CAL_ZONE_MM - 0.5)}")
    return (f'<path id="ecg-cal-{row}" class="ecg-cal" d="{d}" data-mv="1" '
            f'data-height-mm="{_n(MM_PER_MV)}" data-width-mm="{_n(width)}"/>')


def _label(lead: str, x0_mm: float, baseline: float) -> str:
    return (f'<text class="ecg-lead-label" x="{_px(x0_mm + 1)}" y="{_px(baseline - 12)}" '
            f'stroke="none" fill="#000" font-family="sans-serif" font-size="12">{lead}</text>')


def _trace(recording: Recording, lead: str, window: tuple[float, float], x0_mm: float,
           baseline_mm: float, element_id: str) -> str:
    fs = recording.sample_rate_hz
    first = max(0, int(round(window[0] * fs)))
    last = min(recording.n_samples, int(round(window[1] * fs)))
    attrs = (f'id="{element_id}" class="ecg-trace" data-lead="{lead}" '
             f'data-start-s="{_n(window[0])}" data-baseline-y="{_px(baseline_mm)}"')
    if last - first < 2:
        return f'<path {attrs} data-end-s="{_n(window[0])}" d=""/>'
    x = recording.mv(lead)[first:last]
    offset = float(np.median(x))
    index = _decimate(x, fs)
    t = (first + index) / fs - window[0]
    xs = (x0_mm + t * MM_PER_S) * PX_PER_MM
    ys = (baseline_mm - (x[index] - offset) * MM_PER_MV) * PX_PER_MM
    points = "L".join(f"{_n(a)} {_n(b)}" for a, b in zip(xs, ys, strict=True))
    return (f'<path {attrs} data-end-s="{_n(last / fs)}" data-mv-min="{_n(float(x.min()), 4)}" '
            f'data-mv-max="{_n(float(x.max()), 4)}" data-offset-mv="{_n(offset, 4)}" d="M{points}"/>')


def _decimate(x: np.ndarray, fs: float) -> np.ndarray:
    """Sample indices to draw: per pixel column its lowest and highest sample in
    time order; every sample when a column holds two or fewer."""
    per_px = fs / (MM_PER_S * PX_PER_MM)
    if per_px <= 2 or x.size < 3:
        return np.arange(x.size)
    column = (np.arange(x.size) / per_px).astype(int)
    starts = np.flatnonzero(np.r_[True, column[1:] != column[:-1]])
    ends = np.r_[starts[1:], x.size]
    keep = {0, x.size - 1}  # the window's ends, so the trace spans its time exactly
    for s, e in zip(starts, ends, strict=True):
        keep.update((s + int(np.argmin(x[s:e])), s + int(np.argmax(x[s:e]))))
    return np.array(sorted(keep))


def _px(mm: float) -> str:
    return _n(mm * PX_PER_MM)


def _n(value: float, decimals: int = 2) -> str:
    """A number without trailing zeros."""
    text = f"{value:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text
