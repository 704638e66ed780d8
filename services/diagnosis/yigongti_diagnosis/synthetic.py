"""A SYNTHETIC 12-lead ECG with an anterior STEMI pattern, for the demo.

pydicom's only ECG is a normal tracing; the demo needs one a reader would sign as
a STEMI. This makes one. It is labelled ``SYNTHETIC`` in the recording
(`Recording.label`, ``# label: SYNTHETIC`` in its CSV, "SYNTHETIC" on its SVG)
and must never be mistaken for a patient's.

Model: ECGSYN's (McSharry, Clifford, Tarassenko & Smith, "A dynamical model for
generating synthetic electrocardiogram signals", IEEE TBME 2003;50:289), the
simulator behind neurokit2's `ecg_simulate`. ECGSYN draws each beat as five
Gaussian waves P, Q, R, S, T placed at fixed angles of a phase that turns once
per RR interval; this module uses its wave angles (-70, -15, 0, 15, 100 degrees),
widths (0.25, 0.1, 0.1, 0.1, 0.4 rad) and heart-rate scaling of both, as
neurokit2 0.3 implements them.

Why not call `neurokit2.ecg_simulate` itself: its 12-lead mode ("multileads")
rescales every lead to the same -0.4..1.2 mV range, so lead amplitudes and the
isoelectric line are lost (aVR comes out mostly positive); its single lead is
the ODE solution, which carries the model's respiratory baseline sway and a
start-up transient, cannot be split into waves, and its solver skips narrow
waves when amplitudes are scaled. The waves are therefore evaluated in closed
form: the ODE without its baseline term integrates each Gaussian forcing term
into a Gaussian in phase (McSharry 2003, eq. 3), z = sum_k A_k exp(-dtheta_k^2 / 2 b_k^2).
This needs no neurokit2 (the demo does not pay its 200 MB).

Method:

1. Beat times: RR = 60 / rate, modulated by breathing (±2 % at 0.25 Hz, the
   respiratory frequency ECGSYN uses) and jittered (SD 1 %) from the seed.
   assumed: values that look like resting sinus rhythm.
2. Leads I, II and V1-V6: the five waves with amplitudes in mV per lead
   (`AMPLITUDES_MV`, assumed: typical adult values; R grows from V1 to V4 while
   S shrinks).
3. ST elevation: for each beat a plateau from the J point (rising over R+30 to
   R+60 ms, flat to R+200 ms, falling into the T wave by R+360 ms) with a height
   per lead (`ST_MV`): V2 0.35, V3 0.40, V4 0.30 mV (so that at the J point,
   where the S wave has not quite returned, V2-V3 stay at or above the 2.5 mm
   STEMI limit for men under 40, domain-rules §4), V1 and V5 0.10, lead I 0.10,
   lead II -0.05 mV.
4. III, aVR, aVL and aVF are derived from I and II (Einthoven: III = II - I;
   Goldberger: aVR = -(I + II)/2, aVL = I - II/2, aVF = II - I/2), so the limb
   leads agree as a cart's do; the ST offsets follow the same equations, giving
   aVL +0.125 mV and reciprocal depression in III (-0.15) and aVF (-0.10): an
   anterolateral pattern.
5. Laplace noise (0.01 mV scale, from the same seed) on I, II and V1-V6, before
   the limb leads are derived, so the Einthoven and Goldberger identities hold
   sample by sample.

`python -m yigongti_diagnosis.synthetic out.csv` writes the CSV.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Final

import numpy as np

from .recording import LEADS, SYNTHETIC, Recording, from_mv, to_csv

WAVES: Final = ("P", "Q", "R", "S", "T")
# ECGSYN (McSharry 2003) as neurokit2 0.3 implements it (_ecg_simulate_ecgsyn):
# angles in degrees and widths in radians at 60/min, and how they scale with rate.
ECGSYN_ANGLES_DEG: Final = (-70.0, -15.0, 0.0, 15.0, 100.0)
ECGSYN_WIDTHS_RAD: Final = (0.25, 0.1, 0.1, 0.1, 0.4)
# assumed: typical adult amplitudes (mV) for a demo tracing, not measured values.
AMPLITUDES_MV: Final = {
    #       P      Q      R     S      T
    "I": (0.10, -0.05, 0.60, -0.10, 0.20),
    "II": (0.15, -0.05, 1.00, -0.15, 0.30),
    "V1": (0.06, 0.00, 0.20, -0.90, -0.10),
    "V2": (0.08, 0.00, 0.40, -1.20, 0.40),
    "V3": (0.08, 0.00, 0.80, -0.80, 0.50),
    "V4": (0.08, -0.05, 1.30, -0.40, 0.50),
    "V5": (0.08, -0.08, 1.30, -0.20, 0.40),
    "V6": (0.08, -0.08, 1.00, -0.10, 0.30),
}
# ST elevation at the J point (mV) for an anterior STEMI; see the module docstring.
ST_MV: Final = {"I": 0.10, "II": -0.05, "V1": 0.10, "V2": 0.35, "V3": 0.40, "V4": 0.30,
                "V5": 0.10, "V6": 0.00}
ST_RISE_S: Final = (0.030, 0.060)
ST_FALL_S: Final = (0.200, 0.360)
RESPIRATION_HZ: Final = 0.25
RR_MODULATION: Final = 0.02
RR_JITTER: Final = 0.01
NOISE_MV: Final = 0.01


def synthetic_stemi(*, seed: int = 20260301, heart_rate_bpm: float = 78.0,
                    duration_s: float = 10.0, sample_rate_hz: int = 500,
                    acquired_at: datetime | None = None) -> Recording:
    rng = np.random.default_rng(seed)
    n = int(round(duration_s * sample_rate_hz))
    t = np.arange(n) / sample_rate_hz
    r_times = beat_times(rng, heart_rate_bpm, duration_s)
    waves = _waves(t, r_times, heart_rate_bpm)  # (5, n) unit Gaussians in phase
    st = _st_shape(t, r_times)
    base = {lead: np.asarray(AMPLITUDES_MV[lead]) @ waves + ST_MV[lead] * st
            + rng.laplace(0.0, NOISE_MV, n) for lead in AMPLITUDES_MV}
    limb_i, limb_ii = base["I"], base["II"]
    leads = {
        "I": limb_i, "II": limb_ii, "III": limb_ii - limb_i,
        "aVR": -(limb_i + limb_ii) / 2, "aVL": limb_i - limb_ii / 2, "aVF": limb_ii - limb_i / 2,
    } | {lead: base[lead] for lead in ("V1", "V2", "V3", "V4", "V5", "V6")}
    return from_mv({lead: leads[lead] for lead in LEADS}, sample_rate_hz, source="synthetic",
                   acquired_at=acquired_at, label=SYNTHETIC)


def beat_times(rng: np.random.Generator, heart_rate_bpm: float, duration_s: float) -> np.ndarray:
    """R-peak times in seconds, one beat before the start through one after the end
    (so the first and last partial beats are drawn too)."""
    rr_mean = 60.0 / heart_rate_bpm
    times = [-rr_mean * rng.uniform(0.3, 0.9)]
    while times[-1] < duration_s + rr_mean:
        modulation = 1 + RR_MODULATION * np.sin(2 * np.pi * RESPIRATION_HZ * times[-1])
        times.append(times[-1] + rr_mean * modulation * (1 + RR_JITTER * rng.standard_normal()))
    return np.array(times)


def r_peak_samples(*, seed: int = 20260301, heart_rate_bpm: float = 78.0,
                   duration_s: float = 10.0, sample_rate_hz: int = 500) -> np.ndarray:
    """The true R-peak sample indices of `synthetic_stemi` with the same arguments."""
    times = beat_times(np.random.default_rng(seed), heart_rate_bpm, duration_s)
    samples = np.round(times * sample_rate_hz).astype(int)
    return samples[(samples >= 0) & (samples < int(round(duration_s * sample_rate_hz)))]


def _waves(t: np.ndarray, r_times: np.ndarray, heart_rate_bpm: float) -> np.ndarray:
    # ECGSYN's rate scaling: widths x sqrt(rate/60); P and T angles x (rate/60)^(1/4),
    # Q and S angles x sqrt(rate/60).
    hrfact = np.sqrt(heart_rate_bpm / 60.0)
    hrfact2 = np.sqrt(hrfact)
    angles = np.radians(ECGSYN_ANGLES_DEG) * np.array([hrfact2, hrfact, 1, hrfact, hrfact2])
    widths = np.array(ECGSYN_WIDTHS_RAD) * hrfact
    index = np.clip(np.searchsorted(r_times, t, side="right") - 1, 0, r_times.size - 2)
    start, rr = r_times[index], np.diff(r_times)[index]
    theta = 2 * np.pi * (t - start) / rr  # 0 at each R peak, 2*pi at the next
    out = []
    for angle, width in zip(angles, widths, strict=True):
        d = np.angle(np.exp(1j * (theta - angle)))  # wrapped to (-pi, pi]
        out.append(np.exp(-0.5 * (d / width) ** 2))
    return np.array(out)


def _st_shape(t: np.ndarray, r_times: np.ndarray) -> np.ndarray:
    """1.0 on the ST segment of each beat, with raised-cosine edges."""
    out = np.zeros_like(t)
    for r in r_times:
        dt = t - r
        rise = (dt >= ST_RISE_S[0]) & (dt < ST_RISE_S[1])
        out[rise] = 0.5 - 0.5 * np.cos(np.pi * (dt[rise] - ST_RISE_S[0]) / (ST_RISE_S[1] - ST_RISE_S[0]))
        out[(dt >= ST_RISE_S[1]) & (dt < ST_FALL_S[0])] = 1.0
        fall = (dt >= ST_FALL_S[0]) & (dt < ST_FALL_S[1])
        out[fall] = 0.5 + 0.5 * np.cos(np.pi * (dt[fall] - ST_FALL_S[0]) / (ST_FALL_S[1] - ST_FALL_S[0]))
    return out


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else "synthetic_stemi.csv"
    with open(path, "w", encoding="utf-8") as out:
        out.write(to_csv(synthetic_stemi()))
    print(path)


if __name__ == "__main__":
    main()
