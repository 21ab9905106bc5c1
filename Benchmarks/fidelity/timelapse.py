"""Widefield time-lapse forward model for the denoising fidelity harness, independent of Moiré's code.

A scene is drawn from its parameters and a seed:
- a specimen on a grid 2× finer than the camera's: filaments (worm-like chains), puncta, or cells
  (smooth blobs with a bright rim and interior texture);
- static, or moving: every punctum moves 1–3 camera pixels per frame in its own direction (filaments
  and cells drift as a whole);
- the ideal incoherent OTF of a circular pupil (NA 1.2–1.49, emission 510–680 nm, pixels at Nyquist
  with 10 % to spare), pixel integration onto the camera, photons scaled to the brightest pixel of
  the first frame, background, Poisson shot noise, Gaussian read noise, gain, camera offset,
  16-bit rounding.
The truth is the noise-free expected image in photoelectrons; the isolated puncta's true positions
are kept for the centroid test.
"""
from dataclasses import dataclass, asdict
import numpy as np

from forward import incoherent_otf, splat

FINE = 2
MARGIN = 12
OFFSET_ADU = 100.0


@dataclass
class TimeLapse:
    name: str
    specimen: str        # filaments, puncta, cells
    motion: str          # static, moving
    photons: float       # expected photoelectrons at the brightest pixel of the first frame
    na: float
    emission_nm: float
    background: float    # photoelectrons per pixel per frame
    gain: float          # ADU per photoelectron
    read_noise_e: float
    seed: int
    frames: int = 16
    n: int = 128

    @property
    def pixel_um(self):
        return 0.9 * self.emission_nm / 1000 / (4 * self.na)

    @property
    def cutoff(self):
        return 2 * self.na / (self.emission_nm / 1000)

    def noise_argument(self):
        """`moire denoise --noise OFFSET,GAIN,READ`."""
        return f"{OFFSET_ADU},{self.gain},{self.read_noise_e}"

    def as_dict(self):
        return asdict(self)


class Specimen:
    """Fluorophores as points on the fine grid (positions in fine pixels), with per-frame motion."""

    def __init__(self, scene, rng):
        big = (scene.n + 2 * MARGIN) * FINE
        self.size = big
        self.kind = scene.specimen
        self.moving = scene.motion == "moving"
        if scene.specimen == "filaments":
            xs, ys, ws = [], [], []
            for _ in range(int(rng.integers(8, 25))):
                steps = int(rng.uniform(0.3, 1.0) * big * 2)
                angle = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.08, steps))
                xs.append(rng.uniform(0, big) + np.cumsum(0.5 * np.cos(angle)))
                ys.append(rng.uniform(0, big) + np.cumsum(0.5 * np.sin(angle)))
                ws.append(np.full(steps, rng.uniform(0.5, 1.0)))
            self.x, self.y, self.w = np.concatenate(xs), np.concatenate(ys), np.concatenate(ws)
            self.vx = self.vy = None
            self.isolated = np.zeros(0, dtype=int)
        elif scene.specimen == "puncta":
            count = int(rng.integers(40, 160))
            self.x = rng.uniform(0, big, count)
            self.y = rng.uniform(0, big, count)
            self.w = rng.uniform(0.5, 1.0, count) * 6
            speed = rng.uniform(1, 3, count) * FINE   # camera pixels per frame, in fine pixels
            direction = rng.uniform(0, 2 * np.pi, count)
            self.vx = speed * np.cos(direction)
            self.vy = speed * np.sin(direction)
        else:  # cells: filled ellipses with a brighter rim and a textured interior
            xs, ys, ws = [], [], []
            for _ in range(int(rng.integers(3, 8))):
                cx, cy = rng.uniform(0, big, 2)
                a, b = rng.uniform(0.08, 0.2, 2) * big
                theta = rng.uniform(0, np.pi)
                count = int(a * b * 1.5)
                r = np.sqrt(rng.uniform(0, 1, count))
                phi = rng.uniform(0, 2 * np.pi, count)
                u = r * np.cos(phi) * a
                v = r * np.sin(phi) * b
                xs.append(cx + u * np.cos(theta) - v * np.sin(theta))
                ys.append(cy + u * np.sin(theta) + v * np.cos(theta))
                ws.append((0.3 + 0.7 * r ** 6) * rng.uniform(0.5, 1.5, count))
            self.x, self.y, self.w = np.concatenate(xs), np.concatenate(ys), np.concatenate(ws)
            self.vx = self.vy = None
        if self.vx is None:
            drift = rng.uniform(0.3, 1.0) * FINE if self.moving else 0.0
            direction = rng.uniform(0, 2 * np.pi)
            self.vx = np.full(self.x.shape, drift * np.cos(direction))
            self.vy = np.full(self.x.shape, drift * np.sin(direction))
        if not self.moving:
            self.vx = np.zeros_like(self.x)
            self.vy = np.zeros_like(self.y)

    def positions(self, t):
        """Fine-grid positions at frame t; puncta bounce off the field's edges."""
        def bounce(p, v):
            q = np.mod(p + v * t, 2 * self.size)
            return np.where(q < self.size, q, 2 * self.size - q - 1e-6)
        return bounce(self.x, self.vx), bounce(self.y, self.vy)

    def render(self, t):
        img = np.zeros((self.size, self.size))
        x, y = self.positions(t)
        splat(img, x, y, self.w)
        return img


def simulate(scene):
    """Returns (raw frames T×n×n uint16, truth T×n×n in photoelectrons, camera positions of the
    isolated puncta T×K×2 as (x, y) or None)."""
    rng = np.random.default_rng(scene.seed)
    sp = Specimen(scene, rng)
    n = scene.n
    big = n + 2 * MARGIN
    f = np.fft.fftfreq(big * FINE, d=scene.pixel_um / FINE)
    fx, fy = np.meshgrid(f, f)
    otf = incoherent_otf(np.hypot(fx, fy) / scene.cutoff)

    def camera(fine):
        blurred = np.real(np.fft.ifft2(np.fft.fft2(fine) * otf))
        cam = blurred.reshape(big, FINE, big, FINE).sum(axis=(1, 3))
        return np.clip(cam[MARGIN:MARGIN + n, MARGIN:MARGIN + n], 0, None)

    clean = np.array([camera(sp.render(t)) for t in range(scene.frames)])
    scale = scene.photons / max(clean[0].max(), 1e-12)
    truth = clean * scale + scene.background
    electrons = rng.poisson(truth).astype(float) + rng.normal(0, scene.read_noise_e, truth.shape)
    adu = np.clip(np.round(electrons * scene.gain + OFFSET_ADU), 0, 65535).astype(np.uint16)
    tracks = None
    if scene.specimen == "puncta":
        x, y = zip(*(sp.positions(t) for t in range(scene.frames)))
        x = np.array(x) / FINE - MARGIN - 0.25   # fine pixel i covers camera pixel (i + 0.5)/FINE − 0.5
        y = np.array(y) / FINE - MARGIN - 0.25
        # Isolated puncta, away from the borders, at the last frame.
        last = np.stack([x[-1], y[-1]], axis=1)
        d = np.hypot(last[:, None, 0] - last[None, :, 0], last[:, None, 1] - last[None, :, 1])
        np.fill_diagonal(d, np.inf)
        keep = (d.min(axis=1) > 8) & (last[:, 0] > 6) & (last[:, 0] < n - 7) & (last[:, 1] > 6) & (last[:, 1] < n - 7)
        tracks = np.stack([x[:, keep], y[:, keep]], axis=2)
    return adu, truth, tracks
