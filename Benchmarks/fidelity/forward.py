"""2D-SIM forward model for the fidelity harness, written independently of Moiré's Swift code.

A scene is drawn from its parameters and a seed:
- ground truth on a grid 4× finer than the camera's (filaments: worm-like chains; puncta: points),
  on a field larger than the camera's so that nothing wraps around at the borders;
- 3 orientations × 3 phases (or any number: one for LLS-SIM) of I = 1 + m·cos(2π k·r + φ), random
  first orientation and phases;
- the ideal incoherent OTF of a circular pupil (NA, emission), pixel integration onto the camera,
  photons scaled to the widefield peak, background, Poisson shot noise, Gaussian read noise,
  camera offset, 16-bit rounding;
- the reference: the ground truth through the ideal incoherent OTF whose cutoff is f_c + |k| (the
  transfer function apodized Wiener-SIM aims at; with one orientation, its profile over the
  support's reach f_c + |k·û| in each direction û), integrated over the SR pixels (half the camera's).
"""
from dataclasses import dataclass, asdict
import numpy as np

FINE = 4            # ground-truth pixels per camera pixel (per axis)
MARGIN = 16         # camera pixels simulated beyond each border, then cropped
OFFSET_ADU = 100.0  # camera offset
READ_NOISE_E = 1.5  # read noise, electrons (gain 1 ADU/e⁻)


@dataclass
class Scene:
    name: str
    specimen: str          # filaments-sparse, filaments-dense, puncta-sparse, puncta-dense
    photons: float         # expected photons at the widefield image's brightest pixel
    na: float
    emission_nm: float
    k_fraction: float      # |k| / f_c
    modulation: float
    background: float      # photons per pixel per frame
    seed: int
    n: int = 256           # camera pixels per side
    angles: int = 3        # pattern orientations (1: LLS-SIM, gain along k only)
    phases: int = 3        # phases per orientation

    @property
    def pixel_um(self):
        # Nyquist for the widefield OTF with 10 % to spare.
        return 0.9 * self.emission_nm / 1000 / (4 * self.na)

    @property
    def cutoff(self):
        return 2 * self.na / (self.emission_nm / 1000)

    @property
    def k_um(self):
        return self.k_fraction * self.cutoff

    def as_dict(self):
        d = asdict(self)
        d.update(pixel_um=self.pixel_um, cutoff=self.cutoff, k_um=self.k_um)
        return d


def incoherent_otf(rho):
    """Ideal incoherent OTF of a circular pupil at normalised frequency rho = |f| / f_c."""
    r = np.clip(rho, 0, 1)
    return np.where(rho < 1, (2 / np.pi) * (np.arccos(r) - r * np.sqrt(1 - r * r)), 0.0)


def extended_transfer(fx, fy, scene, thetas):
    """The ideal transfer function of the extended support: the incoherent OTF of cutoff f_c + |k|
    (every direction covered by ≥ 3 orientations), or, for fewer orientations, its profile over
    the support's own reach in each direction û: f_c + max |k·û| (the union of the discs of radius
    f_c around 0 and ±k)."""
    f = np.hypot(fx, fy)
    if len(thetas) >= 3:
        return incoherent_otf(f / (scene.cutoff + scene.k_um))
    safe = np.where(f > 0, f, 1)
    along = np.max([np.abs(fx * np.cos(t) + fy * np.sin(t)) for t in thetas], axis=0) / safe
    return incoherent_otf(f / (scene.cutoff + scene.k_um * along))


def frequencies(n, pixel_um):
    f = np.fft.fftfreq(n, d=pixel_um)
    return np.meshgrid(f, f)  # fx varies along x (columns), fy along y (rows)


def splat(img, x, y, w):
    """Adds weights w at sub-pixel positions (x, y), in pixels, of the square image img by bilinear splatting."""
    size = img.shape[0]
    x0 = np.floor(x).astype(int)
    y0 = np.floor(y).astype(int)
    fx = x - x0
    fy = y - y0
    for dx, dy, ww in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi = x0 + dx
        yi = y0 + dy
        ok = (xi >= 0) & (xi < size) & (yi >= 0) & (yi < size)
        np.add.at(img, (yi[ok], xi[ok]), (w * ww)[ok])


def specimen(scene, size, pixel_um, rng):
    """Ground truth on a size² grid of pixel_um: a non-negative brightness map with peak about 1."""
    img = np.zeros((size, size))
    extent = size * pixel_um

    def splat_um(x_um, y_um, w):
        splat(img, x_um / pixel_um, y_um / pixel_um, w)

    kind, density = scene.specimen.split("-")
    if kind == "filaments":
        count = {"sparse": 10, "dense": 40}[density]
        step = pixel_um / 2
        for _ in range(count):
            length = rng.uniform(0.3, 1.0) * extent
            steps = int(length / step)
            turns = rng.normal(0, step / 3.0, steps)   # persistence length about 3 µm
            angle = rng.uniform(0, 2 * np.pi) + np.cumsum(turns)
            x = rng.uniform(0, extent) + np.cumsum(step * np.cos(angle))
            y = rng.uniform(0, extent) + np.cumsum(step * np.sin(angle))
            splat_um(x, y, np.full(steps, rng.uniform(0.6, 1.0)))
    else:
        count = {"sparse": 150, "dense": 1500}[density]
        splat_um(rng.uniform(0, extent, count), rng.uniform(0, extent, count), rng.uniform(0.4, 1.0, count) * 8)
    return img / max(img.max(), 1e-12)


def simulate(scene, realisations=1):
    """Raw frames (realisations × angles·phases × n × n uint16, orientation-major), the reference on the 2× grid,
    the pattern's true parameters and the ground truth's widefield image."""
    rng = np.random.default_rng(scene.seed)
    n = scene.n
    big = n + 2 * MARGIN
    fine = big * FINE
    dxf = scene.pixel_um / FINE
    truth = specimen(scene, fine, dxf, rng)
    fx, fy = frequencies(fine, dxf)
    f = np.hypot(fx, fy)
    otf = incoherent_otf(f / scene.cutoff)
    theta0 = rng.uniform(0, np.pi / scene.angles)
    phases0 = rng.uniform(0, 2 * np.pi, scene.angles)
    y, x = np.mgrid[0:fine, 0:fine] * dxf
    truth_spectrum = np.fft.fft2(truth)

    def camera(img_fine):
        blurred = np.real(np.fft.ifft2(np.fft.fft2(img_fine) * otf))
        cam = blurred.reshape(big, FINE, big, FINE).sum(axis=(1, 3))
        return cam[MARGIN:MARGIN + n, MARGIN:MARGIN + n]

    widefield = camera(truth)
    scale = scene.photons / widefield.max()
    expected = []
    angles = []
    thetas = []
    for a in range(scene.angles):
        theta = theta0 + a * np.pi / scene.angles
        thetas.append(theta)
        kx, ky = scene.k_um * np.cos(theta), scene.k_um * np.sin(theta)
        # Phases as seen from camera pixel (0, 0): its light comes from fine pixels 0…3 of the crop,
        # centred (MARGIN + 0.375) camera pixels from the field's origin.
        origin = (MARGIN + 0.375) * scene.pixel_um
        camera_phase = phases0[a] + 2 * np.pi * (kx + ky) * origin
        angles.append({"kx": kx, "ky": ky, "theta_deg": float(np.degrees(theta)),
                       "phases": [float(camera_phase + 2 * np.pi * p / scene.phases) for p in range(scene.phases)]})
        for p in range(scene.phases):
            phi = phases0[a] + 2 * np.pi * p / scene.phases
            pattern = 1 + scene.modulation * np.cos(2 * np.pi * (kx * x + ky * y) + phi)
            expected.append(scale * np.clip(camera(truth * pattern), 0, None) + scene.background)
    expected = np.array(expected)
    raws = []
    for _ in range(realisations):
        electrons = rng.poisson(expected) + rng.normal(0, READ_NOISE_E, expected.shape)
        raws.append(np.clip(np.round(OFFSET_ADU + electrons), 0, 65535).astype(np.uint16))
    # Reference: the truth through the ideal OTF of cutoff f_c + |k|, integrated over the SR pixels.
    extended = extended_transfer(fx, fy, scene, thetas)
    ref_fine = np.real(np.fft.ifft2(truth_spectrum * extended))
    # SR pixel I then sits where the Fourier convention puts it: camera pixel I/2 (fine pixels 2I+1, 2I+2).
    ref_fine = np.roll(ref_fine, (-1, -1), axis=(0, 1))
    half = FINE // 2
    ref = ref_fine.reshape(2 * big, half, 2 * big, half).sum(axis=(1, 3))
    ref = ref[2 * MARGIN:2 * (MARGIN + n), 2 * MARGIN:2 * (MARGIN + n)] * scale
    return np.array(raws), ref, angles
