#!/usr/bin/env python3
"""3D-SIM fidelity harness: Moiré beside a known-parameter 3D Wiener ceiling and widefield on
simulated three-beam z-stacks with a known ground truth, in one run. numpy only; written
independently of Moiré's Swift code.

Usage: sim3d_fidelity.py --moire PATH/TO/moire [--out DIR] [--photons 100,500,2000] [--seed S]

The forward model:
- ground truth on a grid 4× finer than the camera laterally (the camera's z step axially), on a
  field larger than the camera's in x, y and z so that nothing wraps around: 3D filaments
  (worm-like chains) and puncta, either in the central half of the stack's depth (`contained`: a
  cell imaged whole) or through all of it and beyond (`cut`: the stack cuts through the cell);
- the widefield PSF of a scalar circular pupil (angular spectrum: the field at defocus z is the
  pupil times exp(i2π z √((n/λ)² − |k|²)), the PSF its squared modulus);
- three-beam illumination, 3 orientations × 5 phases, random first orientation and phases:
  I = 1 + m₁ cos(2π Δk_z z) cos(2π k·r + φ) + m₂ cos(2(2π k·r + φ)), where k is the side beams'
  lateral frequency and Δk_z = n/λ_ex − √((n/λ_ex)² − |k|²); the pattern is fixed to the focal plane
  (it moves with the objective as the stage steps), so its axial factor rides with the PSF:
  order 1 is blurred by PSF·cos(2π Δk_z z), orders 0 and 2 by the PSF (Gustafsson et al. 2008);
- pixel integration onto the camera, photons scaled to the widefield peak, background, Poisson
  shot noise, Gaussian read noise, camera offset, 16-bit rounding;
- the reference: the ground truth through an ideal transfer function of the extended support,
  the incoherent OTF profile of ρ = √((f_r / (f_c + 2|k|))² + (f_z / (f_z,c + Δk_z))²), with f_z,c
  = (n − √(n² − NA²)) / λ_em the widefield OTF's axial reach; on the SR grid (half the camera's
  pixel laterally, the camera's z step).

Methods: widefield (the mean of the 15 frames per plane, Fourier-interpolated to the 2× grid),
the ceiling (orders separated with the true phases, shifted by the true k, a generalized Wiener
filter with the true OTFs and modulations, its w chosen per scene by an oracle that sees the
reference, apodized with the reference's transfer function) and Moiré (`moire reconstruct
--sim3d` on the plain stack, as a user runs it, the nominal pattern as the prior). PSNR over the
volume after an affine fit, SSIM averaged over the planes. Prints a table; writes
DIR/sim3d_fidelity.json.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, asdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import methods  # noqa: E402
from forward import incoherent_otf, splat  # noqa: E402

FINE = 4            # ground-truth pixels per camera pixel laterally
MARGIN = 8          # camera pixels simulated beyond each lateral border, then cropped
OFFSET_ADU = 100.0
READ_NOISE_E = 1.5
ANGLES = 3
PHASES = 5


@dataclass
class Scene3D:
    name: str
    specimen: str          # filaments or puncta
    photons: float         # expected photons at the widefield stack's brightest voxel
    depth: str = "contained"   # contained: in the stack's central half; cut: the stack cuts through it
    na: float = 1.4
    immersion: float = 1.518
    emission_nm: float = 525.0
    excitation_nm: float = 488.0
    k_fraction: float = 0.42   # |k| (order 1) / f_c; order 2 at 0.84 f_c
    contrast: float = 0.85     # modulation kept by the optics (1: ideal three-beam interference)
    background: float = 10.0
    seed: int = 1
    n: int = 64                # camera pixels per side
    nz: int = 16               # planes per stack
    dz_um: float = 0.125

    @property
    def pixel_um(self):
        return 0.9 * self.emission_nm / 1000 / (4 * self.na)

    @property
    def cutoff(self):
        return 2 * self.na / (self.emission_nm / 1000)

    @property
    def k_um(self):
        return self.k_fraction * self.cutoff

    @property
    def delta_kz(self):
        n_over_lambda = self.immersion / (self.excitation_nm / 1000)
        return n_over_lambda - np.sqrt(n_over_lambda ** 2 - self.k_um ** 2)

    @property
    def axial_cutoff(self):
        return (self.immersion - np.sqrt(self.immersion ** 2 - self.na ** 2)) / (self.emission_nm / 1000)

    @property
    def modulations(self):
        # Side beams as bright as the centre beam (b = 1): m₁ = 4b/(1 + 2b²), m₂ = 2b²/(1 + 2b²).
        return self.contrast * 4 / 3, self.contrast * 2 / 3

    def as_dict(self):
        d = asdict(self)
        d.update(pixel_um=self.pixel_um, cutoff=self.cutoff, k_um=self.k_um, delta_kz=self.delta_kz)
        return d


def widefield_psf(size, pixel_um, depth, dz_um, na, immersion, emission_nm):
    """|E|² of a scalar circular pupil, size² × depth, z in FFT order (plane 0 in focus), sum 1."""
    f = np.fft.fftfreq(size, d=pixel_um)
    fx, fy = np.meshgrid(f, f)
    kr2 = fx * fx + fy * fy
    n_over_lambda = immersion / (emission_nm / 1000)
    pupil = (np.sqrt(kr2) <= na / (emission_nm / 1000)).astype(complex)
    kz = np.sqrt(np.clip(n_over_lambda ** 2 - kr2, 0, None))
    z = np.fft.fftfreq(depth, d=1 / depth) * dz_um
    psf = np.empty((depth, size, size))
    for i, zi in enumerate(z):
        field = np.fft.ifft2(pupil * np.exp(2j * np.pi * zi * kz))
        psf[i] = np.abs(field) ** 2
    return psf / psf.sum()


def specimen(scene, size, depth, pixel_um, dz_um, rng):
    """Ground truth, depth × size², peak about 1: structures in the central quarter of the depth
    (the central half of the camera's stack: a cell imaged whole, with a margin above and below),
    or, for a `cut` scene, in the central half (the camera's whole stack: it cuts through them)."""
    vol = np.zeros((depth, size, size))
    extent = size * pixel_um
    if scene.depth == "cut":
        z_lo, z_hi = depth // 4, depth - depth // 4
    else:
        z_lo, z_hi = 3 * depth // 8, depth - 3 * depth // 8

    def splat3(x_um, y_um, z_planes, w):
        zi = np.clip(np.round(z_planes).astype(int), z_lo, z_hi - 1)
        for plane in np.unique(zi):
            sel = zi == plane
            splat(vol[plane], x_um[sel] / pixel_um, y_um[sel] / pixel_um, w[sel])

    if scene.specimen == "filaments":
        step = pixel_um / 2
        for _ in range(14):
            steps = int(rng.uniform(0.4, 1.0) * extent / step)
            angle = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, step / 3.0, steps))
            tilt = rng.normal(0, 0.15)   # slope in z planes per µm of length
            x = rng.uniform(0, extent) + np.cumsum(step * np.cos(angle))
            y = rng.uniform(0, extent) + np.cumsum(step * np.sin(angle))
            z = rng.uniform(z_lo, z_hi) + tilt * np.arange(steps) * step / dz_um * dz_um
            z = z_lo + np.abs((z - z_lo) % (2 * (z_hi - z_lo - 1)) - (z_hi - z_lo - 1))  # reflect into range
            splat3(x, y, z, np.full(steps, rng.uniform(0.6, 1.0)))
    else:
        count = 400
        splat3(rng.uniform(0, extent, count), rng.uniform(0, extent, count), rng.uniform(z_lo, z_hi, count),
               rng.uniform(0.4, 1.0, count) * 8)
    return vol / max(vol.max(), 1e-12)


def simulate(scene):
    """Raw stack (nz × angles × phases planes of n², z-angle-phase order, uint16), the reference
    (nz × 2n × 2n) and the true parameters."""
    rng = np.random.default_rng(scene.seed)
    n, nz = scene.n, scene.nz
    big = n + 2 * MARGIN
    fine = big * FINE
    depth = 2 * nz                     # the camera sees the central nz planes
    dxf = scene.pixel_um / FINE
    truth = specimen(scene, fine, depth, dxf, scene.dz_um, rng)
    psf = widefield_psf(fine, dxf, depth, scene.dz_um, scene.na, scene.immersion, scene.emission_nm)
    z_wrapped = np.fft.fftfreq(depth, d=1 / depth)[:, None, None] * scene.dz_um
    otf0 = np.fft.fftn(psf)
    otf1 = np.fft.fftn(psf * np.cos(2 * np.pi * scene.delta_kz * z_wrapped))
    z0 = (depth - nz) // 2

    def camera(volume_fine, otf):
        blurred = np.fft.ifftn(np.fft.fftn(volume_fine) * otf)
        cam = blurred.reshape(depth, big, FINE, big, FINE).sum(axis=(2, 4))
        return cam[z0:z0 + nz, MARGIN:MARGIN + n, MARGIN:MARGIN + n]

    widefield = np.real(camera(truth, otf0))
    scale = scene.photons / widefield.max()
    m1, m2 = scene.modulations
    y, x = np.mgrid[0:fine, 0:fine] * dxf
    theta0 = rng.uniform(0, np.pi / 3)
    phases0 = rng.uniform(0, 2 * np.pi, ANGLES)
    # Camera pixel (0, 0) takes the light of fine pixels 0…3 of the crop: its centre lies
    # (MARGIN + 0.375) camera pixels from the field's origin; phases are referred to it.
    origin = (MARGIN + 0.375) * scene.pixel_um
    expected = np.zeros((nz, ANGLES, PHASES, n, n))
    angles = []
    for a in range(ANGLES):
        theta = theta0 + a * np.pi / 3
        kx, ky = scene.k_um * np.cos(theta), scene.k_um * np.sin(theta)
        carrier = np.exp(2j * np.pi * (kx * x + ky * y))
        order1 = camera(truth * carrier, otf1)          # (S e^{+i2πk·r}) ⊛ (PSF cos 2πΔk_z z)
        order2 = camera(truth * carrier ** 2, otf0)     # (S e^{+i4πk·r}) ⊛ PSF
        camera_phases = []
        for p in range(PHASES):
            phi = phases0[a] + 2 * np.pi * p / PHASES
            frame = widefield + m1 * np.real(np.exp(1j * phi) * order1) + m2 * np.real(np.exp(2j * phi) * order2)
            expected[:, a, p] = scale * np.clip(frame, 0, None) + scene.background
            camera_phases.append(float(phi + 2 * np.pi * (kx + ky) * origin))
        angles.append({"kx": kx, "ky": ky, "theta_deg": float(np.degrees(theta)), "phases": camera_phases})
    electrons = rng.poisson(expected) + rng.normal(0, READ_NOISE_E, expected.shape)
    raw = np.clip(np.round(OFFSET_ADU + electrons), 0, 65535).astype(np.uint16)
    # The reference: the truth through the extended support's ideal transfer function, on the SR grid.
    fz = np.fft.fftfreq(depth, d=scene.dz_um)[:, None, None]
    f = np.fft.fftfreq(fine, d=dxf)
    fr = np.hypot(*np.meshgrid(f, f))[None, :, :]
    rho = np.sqrt((fr / (scene.cutoff + 2 * scene.k_um)) ** 2 + (fz / (scene.axial_cutoff + scene.delta_kz)) ** 2)
    reference_fine = np.real(np.fft.ifftn(np.fft.fftn(truth) * incoherent_otf(rho)))
    # SR pixel I sits at camera pixel I/2 (fine pixels 2I+1, 2I+2), as in the 2D harness.
    reference_fine = np.roll(reference_fine, (-1, -1), axis=(1, 2))
    half = FINE // 2
    reference = reference_fine.reshape(depth, 2 * big, half, 2 * big, half).sum(axis=(2, 4))
    reference = reference[z0:z0 + nz, 2 * MARGIN:2 * (MARGIN + n), 2 * MARGIN:2 * (MARGIN + n)] * scale
    return raw.reshape(nz * ANGLES * PHASES, n, n), reference, angles


def widefield_method(raw, scene):
    stack = raw.reshape(scene.nz, ANGLES * PHASES, scene.n, scene.n).astype(float).mean(axis=1) - OFFSET_ADU
    n = scene.n
    return np.array([np.real(methods.fourier_upsample_complex(methods.mirror_pad(plane)))[:2 * n, :2 * n]
                     for plane in stack])


def ceiling(raw, scene, angles, reference):
    """Generalized 3D Wiener with the true parameters and OTFs; the oracle's best w by PSNR."""
    n, nz = scene.n, scene.nz
    pad = n // 2
    size = n + 2 * pad
    big = 2 * size
    dx2 = scene.pixel_um / 2
    frames = raw.reshape(nz, ANGLES, PHASES, n, n).astype(float) - OFFSET_ADU - scene.background
    rise = 0.5 - 0.5 * np.cos(np.pi * (np.arange(pad) + 0.5) / pad)
    profile = np.concatenate([rise, np.ones(n), rise[::-1]])
    window = np.outer(profile, profile)
    psf = widefield_psf(big, dx2, nz, scene.dz_um, scene.na, scene.immersion, scene.emission_nm)
    z_wrapped = np.fft.fftfreq(nz, d=1 / nz)[:, None, None] * scene.dz_um
    # Per order: its PSF (order 1's axial modulation rides with it) and its weight.
    psf_m = {0: psf, 1: psf * np.cos(2 * np.pi * scene.delta_kz * z_wrapped), 2: psf}
    m1, m2 = scene.modulations
    weight = {0: 1.0, 1: m1 / 2, 2: m2 / 2}
    f = np.fft.fftfreq(big, d=dx2)
    fx, fy = np.meshgrid(f, f)
    y, x = (np.mgrid[0:big, 0:big] / 2 - pad) * scene.pixel_um   # from camera pixel (0, 0)
    wrapped = np.fft.fftfreq(big, d=1 / big) * dx2                # the PSF's own coordinates
    xs, ys = np.meshgrid(wrapped, wrapped)
    numerator = np.zeros((nz, big, big), complex)
    denominator = np.zeros((nz, big, big))
    orders = np.arange(-2, 3)

    def shifted_otf(order, kx, ky):
        """OTF_|m|(f + m·k) on the grid: the order's PSF times e^{−i2π m k·r}, transformed."""
        ramp = np.exp(-2j * np.pi * order * (kx * xs + ky * ys))
        return np.fft.fftn(psf_m[abs(order)] * ramp)

    for a, ang in enumerate(angles):
        phis = np.array(ang["phases"])
        mixing = np.exp(1j * np.outer(phis, orders))           # D_p = Σ_m e^{i m φ_p} Y_m
        unmix = np.linalg.inv(mixing)
        padded = np.array([[np.pad(frames[z, a, p], pad, mode="symmetric") * window for p in range(PHASES)]
                           for z in range(nz)])              # nz × phases × size²
        separated = np.einsum("mp,zpyx->mzyx", unmix, padded)
        kx, ky = ang["kx"], ang["ky"]
        for index, order in enumerate(orders):
            upsampled = np.array([methods.fourier_upsample_complex(plane) for plane in separated[index]])
            spectrum = np.fft.fftn(upsampled * np.exp(-2j * np.pi * order * (kx * x + ky * y)))
            h = weight[abs(order)] * shifted_otf(order, kx, ky)
            numerator += np.conj(h) * spectrum
            denominator += np.abs(h) ** 2
    fz = np.fft.fftfreq(nz, d=scene.dz_um)[:, None, None]
    rho = np.sqrt((np.hypot(fx, fy)[None] / (scene.cutoff + 2 * scene.k_um)) ** 2
                  + (fz / (scene.axial_cutoff + scene.delta_kz)) ** 2)
    apodization = incoherent_otf(rho)
    best = None
    for w in np.geomspace(1e-3, 1.0, 10):
        full = np.real(np.fft.ifftn(numerator / (denominator + w * w) * apodization))
        sr = full[:, 2 * pad:2 * pad + 2 * n, 2 * pad:2 * pad + 2 * n]
        score = methods.psnr(sr, reference)
        if best is None or score > best[0]:
            best = (score, w, sr)
    return best[2], best[1]


def moire(raw, scene, angles, binary):
    import tifffile
    with tempfile.TemporaryDirectory() as tmp:
        raw_path = os.path.join(tmp, "raw.tif")
        out_path = os.path.join(tmp, "sr3d.ome.tif")
        tifffile.imwrite(raw_path, raw)
        prior = f"{1 / scene.k_um:.6f}@{angles[0]['theta_deg'] % 180:.4f}"
        cmd = [binary, "reconstruct", raw_path, "--out", out_path, "--sim3d", "--angles", str(ANGLES),
               "--phases", str(PHASES), "--z-planes", str(scene.nz), "--z-step-um", str(scene.dz_um),
               "--pixel-um", f"{scene.pixel_um:.6f}", "--na", str(scene.na), "--emission-nm", str(scene.emission_nm),
               "--excitation-nm", str(scene.excitation_nm), "--immersion-index", str(scene.immersion),
               "--background", str(OFFSET_ADU), "--k-prior", prior]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {done.stdout}{done.stderr}")
        return tifffile.imread(out_path).astype(float).reshape(scene.nz, 2 * scene.n, 2 * scene.n)


def volume_ssim(volume, reference):
    return float(np.mean([methods.ssim(volume[z], reference[z]) for z in range(volume.shape[0])]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moire", required=True, help="path of the moire binary (release build)")
    parser.add_argument("--out", default=None, help="folder for sim3d_fidelity.json")
    parser.add_argument("--photons", default="100,500,2000")
    parser.add_argument("--specimens", default="filaments,puncta")
    parser.add_argument("--depths", default="contained,cut", help="contained, cut or both")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    rows = []
    print(f"{'scene':<28} {'method':<10} {'PSNR dB':>8} {'SSIM':>6}")
    scenes = []
    for depth in args.depths.split(","):
        for specimen_kind in args.specimens.split(","):
            for photons in [float(p) for p in args.photons.split(",")]:
                # The optics and the pattern drawn at random around a 3D-SIM microscope's.
                emission = float(np.round(rng.uniform(500, 620)))
                scenes.append(Scene3D(name=f"{depth}-{specimen_kind}-{int(photons)}", specimen=specimen_kind,
                                      depth=depth, photons=photons, seed=int(rng.integers(1 << 30)),
                                      na=float(np.round(rng.uniform(1.3, 1.45), 3)), emission_nm=emission,
                                      excitation_nm=emission - 40, k_fraction=float(np.round(rng.uniform(0.40, 0.46), 3)),
                                      contrast=float(np.round(rng.uniform(0.6, 0.95), 2)),
                                      background=float(np.round(rng.uniform(0, 30), 1))))
    for scene in scenes:
        started = time.time()
        raw, reference, angles = simulate(scene)
        results = {}
        results["widefield"] = widefield_method(raw, scene)
        results["ceiling"], w = ceiling(raw, scene, angles, reference)
        results["moire"] = moire(raw, scene, angles, args.moire)
        row = {"scene": scene.as_dict(), "ceiling_w": float(w), "seconds": time.time() - started}
        for name, volume in results.items():
            row[name] = {"psnr": methods.psnr(volume, reference), "ssim": volume_ssim(volume, reference)}
            print(f"{scene.name:<28} {name:<10} {row[name]['psnr']:8.2f} {row[name]['ssim']:6.3f}", flush=True)
        rows.append(row)
    methods.report_against_ceiling(rows, args.out, "sim3d_fidelity.json")


if __name__ == "__main__":
    main()
