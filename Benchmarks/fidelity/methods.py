"""The methods the fidelity harness compares, and its metrics (numpy only).

- widefield: the mean of the nine frames, interpolated to the 2× grid;
- ceiling: a textbook generalized Wiener reconstruction given the true parameters (the
  simulation's k, phases and modulation), its Wiener parameter chosen per scene by an oracle that
  sees the reference, apodized with the reference's transfer function, frames mirror-padded;
- napari-sim-processor (ConvSimProcessor, its own parameter estimation), when installed;
- Moiré: `moire reconstruct` on the raw stack as a user runs it (the nominal pattern as prior).
"""
import importlib.util
import json
import io
import contextlib
import os
import subprocess
import sys
import tempfile
import types

import numpy as np

from forward import OFFSET_ADU, extended_transfer, incoherent_otf


def mirror_pad(img):
    """Symmetric extension to twice the size: no edge discontinuity for periodic transforms."""
    top = np.concatenate([img, img[:, ::-1]], axis=1)
    return np.concatenate([top, top[::-1, :]], axis=0)


def widefield(raw, scene):
    wf = raw.astype(float).mean(axis=0) - OFFSET_ADU
    n = scene.n
    up = np.real(fourier_upsample_complex(mirror_pad(wf)))
    return up[:2 * n, :2 * n]


def wiener_ceiling(raw, scene, angles, reference, metric, w_grid=None):
    """Generalized Wiener with the true parameters; the best w of `w_grid` by `metric` against the reference.

    Edges: each frame is mirrored into a border of n/2 pixels that a cosine window fades to zero, so
    the transforms see a continuous periodic field; the field itself is left untouched and cropped back.
    """
    n = scene.n
    pad = n // 2
    size = n + 2 * pad
    big = 2 * size
    dx = scene.pixel_um
    frames = raw.astype(float) - OFFSET_ADU
    rise = 0.5 - 0.5 * np.cos(np.pi * (np.arange(pad) + 0.5) / pad)
    profile = np.concatenate([rise, np.ones(n), rise[::-1]])
    window = np.outer(profile, profile)
    fx, fy = np.meshgrid(np.fft.fftfreq(big, d=dx / 2), np.fft.fftfreq(big, d=dx / 2))
    # Positions on the 2× grid measured from camera pixel (0, 0), where the phases are referenced.
    y, x = (np.mgrid[0:big, 0:big] / 2 - pad) * dx
    otf0 = incoherent_otf(np.hypot(fx, fy) / scene.cutoff)
    m = scene.modulation
    numerator = np.zeros((big, big), complex)
    denominator = np.zeros((big, big))
    for a, ang in enumerate(angles):
        phis = np.array(ang["phases"])
        count = len(phis)
        rows = np.stack([np.ones(count), 2 * np.cos(phis), -2 * np.sin(phis)], axis=1)
        inv = np.linalg.pinv(rows)
        padded = np.array([np.pad(frames[count * a + p], pad, mode="symmetric") * window for p in range(count)])
        b0 = np.tensordot(inv[0], padded, axes=1)
        c = np.tensordot(inv[1], padded, axes=1) + 1j * np.tensordot(inv[2], padded, axes=1)
        kx, ky = ang["kx"], ang["ky"]
        shifted = fourier_upsample_complex(c) * np.exp(-2j * np.pi * (kx * x + ky * y))
        band0 = np.fft.fft2(fourier_upsample_complex(b0))
        plus = np.fft.fft2(shifted)
        minus = np.fft.fft2(np.conj(shifted))
        h_plus = (m / 2) * incoherent_otf(np.hypot(fx + kx, fy + ky) / scene.cutoff)
        h_minus = (m / 2) * incoherent_otf(np.hypot(fx - kx, fy - ky) / scene.cutoff)
        numerator += otf0 * band0 + h_plus * plus + h_minus * minus
        denominator += otf0 ** 2 + h_plus ** 2 + h_minus ** 2
    apodization = extended_transfer(fx, fy, scene, [np.radians(a["theta_deg"]) for a in angles])
    best = None
    for w in (w_grid if w_grid is not None else np.geomspace(1e-3, 1.0, 13)):
        full = np.real(np.fft.ifft2(numerator / (denominator + w * w) * apodization))
        sr = full[2 * pad:2 * pad + 2 * n, 2 * pad:2 * pad + 2 * n]
        score = metric(sr, reference)
        if best is None or score > best[0]:
            best = (score, w, sr)
    return best[2], best[1]


def fourier_upsample_complex(img):
    """Band-limited interpolation onto the 2× grid (sample 0 stays at 0)."""
    n0, n1 = img.shape
    spec = np.fft.fftshift(np.fft.fft2(img))
    big = np.zeros((2 * n0, 2 * n1), complex)
    big[n0 // 2:n0 // 2 + n0, n1 // 2:n1 // 2 + n1] = spec
    return np.fft.ifft2(np.fft.ifftshift(big)) * 4


_conv_sim_processor = None


def conv_sim_processor_class():
    """napari-sim-processor's ConvSimProcessor, loaded without the package's Qt widget (nil when not installed)."""
    global _conv_sim_processor
    if _conv_sim_processor is None:
        spec = importlib.util.find_spec("napari_sim_processor")
        if spec is None:
            return None
        pkg = types.ModuleType("napari_sim_processor")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["napari_sim_processor"] = pkg
        from napari_sim_processor.processors.convSimProcessor import ConvSimProcessor
        _conv_sim_processor = ConvSimProcessor
    return _conv_sim_processor


def napari_sim_processor(raw, scene):
    """napari-sim-processor's reconstruction with its own calibration (parameter estimation)."""
    ConvSimProcessor = conv_sim_processor_class()
    if ConvSimProcessor is None:
        return None
    n = scene.n
    img = (raw.astype(np.float32) - OFFSET_ADU)
    p = ConvSimProcessor(angleSteps=3, phaseSteps=3)
    p.N = n
    p.Nx = n
    p.Ny = n
    p.pixelsize = scene.pixel_um
    p.magnification = 1.0
    p.NA = scene.na
    p.n = 1.518
    p.wavelength = scene.emission_nm / 1000
    p.debug = False
    with contextlib.redirect_stdout(io.StringIO()):
        p.calibrate(img)
        return np.asarray(p.reconstruct_rfftw(img), dtype=float)


def moire(raw, scene, angles, binary, extra=(), given_truth=False):
    """`moire reconstruct` on the phase set (uint16 TIFF), the nominal pattern as the prior; with
    `given_truth`, the true pattern parameters instead (`--parameters`: no estimation, the filter alone)."""
    import tifffile
    with tempfile.TemporaryDirectory() as tmp:
        raw_path = os.path.join(tmp, "raw.tif")
        out_path = os.path.join(tmp, "sr.ome.tif")
        tifffile.imwrite(raw_path, raw, photometric="minisblack")
        if given_truth:
            truth_path = os.path.join(tmp, "truth.json")
            with open(truth_path, "w") as f:
                json.dump({"angles": [{"kx": a["kx"], "ky": a["ky"], "phases": a["phases"],
                                       "modulation": scene.modulation, "confidence": 0, "source": "truth",
                                       "flagged": False} for a in angles]}, f)
            pattern = ["--parameters", truth_path]
        else:
            pattern = ["--k-prior", f"{1 / scene.k_um:.6f}@{angles[0]['theta_deg']:.4f}"]
        cmd = [binary, "reconstruct", raw_path, "--out", out_path, "--pixel-um", f"{scene.pixel_um:.6f}",
               "--na", str(scene.na), "--emission-nm", str(scene.emission_nm), "--background", str(OFFSET_ADU),
               *pattern, "--angles", str(scene.angles), "--phases", str(scene.phases), *extra]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {done.stdout}{done.stderr}")
        return tifffile.imread(out_path).astype(float).reshape(2 * scene.n, 2 * scene.n)


# Metrics ---------------------------------------------------------------------------------------

def affine_fit(img, reference):
    """a·img + b closest to the reference (least squares): intensity scale and offset do not count."""
    a_mat = np.stack([img.ravel(), np.ones(img.size)], axis=1)
    coef, *_ = np.linalg.lstsq(a_mat, reference.ravel(), rcond=None)
    return coef[0] * img + coef[1]


def psnr(img, reference):
    fitted = affine_fit(img, reference)
    mse = np.mean((fitted - reference) ** 2)
    span = reference.max() - reference.min()
    return 10 * np.log10(span * span / mse)


def gaussian_blur(img, sigma=1.5):
    radius = int(4 * sigma)
    t = np.arange(-radius, radius + 1)
    kernel = np.exp(-t * t / (2 * sigma * sigma))
    kernel /= kernel.sum()
    padded = np.pad(img, radius, mode="reflect")
    rows = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="valid"), 1, padded)
    return np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="valid"), 0, rows)


def ssim(img, reference):
    """SSIM (Wang et al. 2004; Gaussian window σ = 1.5) of the affine-fitted image."""
    x = affine_fit(img, reference)
    y = reference
    span = y.max() - y.min()
    c1 = (0.01 * span) ** 2
    c2 = (0.03 * span) ** 2
    mx = gaussian_blur(x)
    my = gaussian_blur(y)
    sxx = gaussian_blur(x * x) - mx * mx
    syy = gaussian_blur(y * y) - my * my
    sxy = gaussian_blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s.mean())


def frc_resolution(a, b, pixel_um, threshold=1 / 7):
    """Resolution (µm) where the Fourier ring correlation of two noise realisations falls below 1/7."""
    n = a.shape[0]
    win = np.outer(np.hanning(n), np.hanning(n))
    fa = np.fft.fftshift(np.fft.fft2((a - a.mean()) * win))
    fb = np.fft.fftshift(np.fft.fft2((b - b.mean()) * win))
    yy, xx = np.indices(a.shape)
    r = np.hypot(xx - n // 2, yy - n // 2).astype(int)
    rings = n // 2
    num = np.bincount(r.ravel(), np.real(fa * np.conj(fb)).ravel(), minlength=rings)[:rings]
    da = np.bincount(r.ravel(), (np.abs(fa) ** 2).ravel(), minlength=rings)[:rings]
    db = np.bincount(r.ravel(), (np.abs(fb) ** 2).ravel(), minlength=rings)[:rings]
    frc = num / np.sqrt(da * db + 1e-30)
    # Smooth over 3 rings; the first crossing after the low frequencies.
    smooth = np.convolve(frc, np.ones(3) / 3, mode="same")
    below = np.nonzero(smooth[2:] < threshold)[0]
    ring = (below[0] + 2) if below.size else rings - 1
    return 1 / (ring / (n * pixel_um)) if ring > 0 else float("inf")


def report_against_ceiling(rows, out, filename):
    """Prints Moiré's PSNR against the ceiling's and widefield's per scene (rows: {"scene": {name…},
    "moire"/"ceiling"/"widefield": {"psnr"…}}) and writes the rows as JSON to out/filename when out is given."""
    print("\nMoiré − ceiling (dB) per scene: " + ", ".join(
        f"{r['scene']['name']} {r['moire']['psnr'] - r['ceiling']['psnr']:+.2f}" for r in rows))
    print("Moiré − widefield (dB) per scene: " + ", ".join(
        f"{r['scene']['name']} {r['moire']['psnr'] - r['widefield']['psnr']:+.2f}" for r in rows))
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, filename), "w") as f:
            json.dump(rows, f, indent=1)
