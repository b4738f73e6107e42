"""Small synthetic recording folders for tests that run the command line."""
import numpy as np


def tone_folder(folder, seconds=0.25, takes=10, long_clip_seconds=None, rate=8000):
    """FSDD-style folder: 3 classes (tones of different pitch) x 2 speakers x ``takes`` takes of
    ``seconds`` each; with ``long_clip_seconds`` one more take of class 0 that long."""
    import soundfile

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def write(name, label_hz, n):
        t = np.arange(n) / rate
        wave = 0.3 * np.sin(2 * np.pi * label_hz * (1 + 0.02 * rng.normal()) * t)
        wave += 0.02 * rng.normal(size=t.size)
        soundfile.write(folder / name, wave, rate, subtype="PCM_16")

    for label, hz in enumerate((300, 700, 1500)):
        for speaker in ("ann", "bob"):
            for take in range(takes):
                write(f"{label}_{speaker}_{take}.wav", hz, int(seconds * rate))
    if long_clip_seconds:
        write(f"0_ann_{takes}.wav", 300, int(long_clip_seconds * rate))
    return folder
