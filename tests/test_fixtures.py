"""Pin the test fixtures: CLIP's real token ids, tiny checkpoints, shape pictures and the trained model."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest
import regex
import torch
from PIL import Image

from bot.prompts import readable_label, templated
from tests.fixtures import SHAPES_FOLDER_SEED, training
from tests.fixtures.models import make_tiny_clip
from tests.fixtures.shapes import (
    CLASSES,
    COLOURS,
    SHAPES,
    class_rng,
    draw_shape,
    make_image_folder,
    make_pictures,
    split_class,
)
from tests.fixtures.tokenizer import BOS_ID, EOS_ID, VOCAB_SIZE, bytes_to_unicode, clip_merges, clip_vocab


class ReferenceTokenizer:
    """open_clip's SimpleTokenizer BPE (without ftfy, which only matters for broken unicode)."""

    pattern = regex.compile(
        r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
        regex.IGNORECASE,
    )

    def __init__(self) -> None:
        self.byte_encoder = bytes_to_unicode()
        self.encoder = clip_vocab()
        self.ranks = {merge: rank for rank, merge in enumerate(clip_merges())}

    def bpe(self, token: str) -> list[str]:
        """Merge the lowest-ranked adjacent pair until none is left, as open_clip does."""
        if token in ("<|startoftext|>", "<|endoftext|>"):  # open_clip seeds its BPE cache with the specials
            return [token]
        word = (*token[:-1], token[-1] + "</w>")
        while len(word) > 1:
            pairs = set(itertools.pairwise(word))
            best = min(pairs, key=lambda pair: self.ranks.get(pair, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        return list(word)

    def encode(self, text: str) -> list[int]:
        """`<|startoftext|>` + BPE ids of the cleaned, lower-cased text + `<|endoftext|>`."""
        text = regex.sub(r"\s+", " ", text).strip().lower()
        ids = [BOS_ID]
        for token in self.pattern.findall(text):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids += [self.encoder[piece] for piece in self.bpe(token)]
        return [*ids, EOS_ID]


# ---------------------------------------------------------------- tokenizer


def test_vocab_layout_matches_open_clip() -> None:
    vocab = clip_vocab()
    assert len(vocab) == VOCAB_SIZE == 49408
    assert len(clip_merges()) == 49152 - 256 - 2
    assert vocab["!"] == 0 and vocab["!</w>"] == 256
    assert vocab["<|startoftext|>"] == BOS_ID == 49406 and vocab["<|endoftext|>"] == EOS_ID == 49407


def test_tokenizer_gives_real_clip_ids(tiny_clip_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_clip_dir)
    assert type(tokenizer).__name__ == "CLIPTokenizer"
    assert tokenizer.model_max_length == 77
    assert tokenizer.pad_token_id == EOS_ID  # CLIP pads with <|endoftext|>
    # Ids of OpenAI's released tokenizer.
    assert tokenizer("a red circle").input_ids == [49406, 320, 736, 7117, 49407]
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    reference = ReferenceTokenizer()
    assert reference.encode("a red circle") == [49406, 320, 736, 7117, 49407]
    texts = [
        *(caption for name in CLASSES for caption in templated(readable_label(name))),
        "A Close-Up photo of the LARGE   orange cross!",
        "itap of a bumblebee; don't you'll 2025 café",
        "ünïcödé ☃ emoji 🐱 and <|endoftext|> inside",
    ]
    batch = tokenizer(texts).input_ids
    for text, ids in zip(texts, batch, strict=True):
        assert ids == reference.encode(text), text


# ---------------------------------------------------------------- tiny model


def test_tiny_clip_loads_offline(tiny_clip_dir: Path) -> None:
    from transformers import AutoProcessor, AutoTokenizer, CLIPImageProcessor, CLIPModel

    for name in ("config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"):
        assert (tiny_clip_dir / name).is_file(), name
    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_clip_dir)
    processor = CLIPImageProcessor.from_pretrained(tiny_clip_dir)
    assert type(AutoProcessor.from_pretrained(tiny_clip_dir)).__name__ == "CLIPProcessor"
    assert model.config.projection_dim == 16
    assert model.config.text_config.vocab_size == 49408
    assert model.config.vision_config.image_size == 32

    pictures = [Image.new("RGB", (64, 48), "red"), Image.new("RGB", (40, 90), "blue")]
    pixels = processor(images=pictures, return_tensors="pt").pixel_values
    assert pixels.shape == (2, 3, 32, 32)
    texts = tokenizer(["a red circle", "a photo of a blue square."], padding=True, return_tensors="pt")
    with torch.inference_mode():
        image_features = model.get_image_features(pixel_values=pixels).pooler_output
        text_features = model.get_text_features(**texts).pooler_output
    assert image_features.shape == text_features.shape == (2, 16)
    assert torch.isfinite(image_features).all() and torch.isfinite(text_features).all()


def test_tiny_clip_is_deterministic(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    first = load_file(make_tiny_clip(tmp_path / "a", seed=3) / "model.safetensors")
    again = load_file(make_tiny_clip(tmp_path / "b", seed=3) / "model.safetensors")
    other = load_file(make_tiny_clip(tmp_path / "c", seed=4) / "model.safetensors")
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


# ---------------------------------------------------------------- pictures


def test_classes_read_as_words() -> None:
    assert len(COLOURS) == 8 and len(SHAPES) == 4 and len(CLASSES) == 32
    assert readable_label("red_circle") == "red circle"
    assert len({readable_label(name) for name in CLASSES}) == 32
    assert all(readable_label(name).split() == list(split_class(name)) for name in CLASSES)


def test_colours_survive_a_32px_downscale() -> None:
    palette = np.array(list(COLOURS.values()), dtype=np.float32)
    names = list(COLOURS)
    for name in CLASSES:
        colour, shape = split_class(name)
        for _ in range(3):
            picture = draw_shape(colour, shape, class_rng(7, name)).resize((32, 32), Image.Resampling.BICUBIC)
            assert picture.mode == "RGB"
            pixels = np.asarray(picture, dtype=np.float32).reshape(-1, 3)
            distance = np.linalg.norm(pixels[:, None, :] - palette[None], axis=-1)
            close = distance.min(1) < 60  # the shape's own pixels; grey background is never this close
            assert close.sum() >= 20, name
            nearest = np.bincount(distance[close].argmin(1), minlength=len(names))
            assert names[int(nearest.argmax())] == colour, name
            assert nearest.max() >= 0.9 * close.sum(), name


def test_processor_matches_clip_preprocessing(tiny_clip_dir: Path) -> None:
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor.from_pretrained(tiny_clip_dir)
    mean = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
    std = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
    rng = class_rng(11, "red_circle")
    for width, height in ((64, 64), (80, 64), (64, 100)):
        picture = draw_shape("red", "circle", rng, size=100).resize((width, height))
        # CLIP: bicubic resize of the shortest side to 32, centre crop 32 x 32, scale to [0, 1], normalise.
        scale = 32 / min(width, height)
        resized = picture.resize((round(width * scale), round(height * scale)), Image.Resampling.BICUBIC)
        left, top = (resized.width - 32) // 2, (resized.height - 32) // 2
        cropped = np.asarray(resized.crop((left, top, left + 32, top + 32)), dtype=np.float32) / 255
        expected = ((cropped - mean) / std).transpose(2, 0, 1)
        actual = processor(images=[picture], return_tensors="np").pixel_values[0]
        np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_image_folder_layout(shapes_folder: Path) -> None:
    folders = sorted(p.name for p in shapes_folder.iterdir())
    assert folders == sorted(CLASSES)
    for name in CLASSES:
        files = sorted((shapes_folder / name).iterdir(), key=lambda p: int(p.stem))
        assert [p.name for p in files] == [f"{n}.{'jpg' if n % 2 == 0 else 'png'}" for n in range(6)]
        with Image.open(files[0]) as picture:
            assert picture.mode == "RGB" and picture.size == (64, 64)


def test_image_folder_is_deterministic(tmp_path: Path) -> None:
    first = make_image_folder(tmp_path / "a", per_class=2, seed=SHAPES_FOLDER_SEED, classes=["red_circle"])
    again = make_image_folder(tmp_path / "b", per_class=2, seed=SHAPES_FOLDER_SEED, classes=["red_circle"])
    other = make_image_folder(
        tmp_path / "c", per_class=2, seed=SHAPES_FOLDER_SEED + 1, classes=["red_circle"]
    )
    png = Path("red_circle/1.png")
    assert (first / png).read_bytes() == (again / png).read_bytes() != (other / png).read_bytes()


def test_image_folder_loads_with_datasets(shapes_folder: Path, tmp_path: Path) -> None:
    import datasets

    dataset = datasets.load_dataset(
        "imagefolder", data_dir=str(shapes_folder), cache_dir=str(tmp_path), split="train"
    )
    assert dataset.num_rows == 6 * 32
    assert sorted(dataset.features["label"].names) == sorted(CLASSES)


# ---------------------------------------------------------------- trained model cache


def test_cache_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(directory: Path, recipe: dict) -> dict:
        (Path(directory) / "half-a-model").write_text("x")
        raise RuntimeError("interrupted")

    (tmp_path / ".tmp-shapes-clip-0123456789abcdef-left").mkdir()  # an interrupted run's scratch
    monkeypatch.setattr(training, "train_shapes_clip", broken)
    with pytest.raises(RuntimeError):
        training.trained_shapes_clip(tmp_path)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []

    def quick(directory: Path, recipe: dict) -> dict:
        (Path(directory) / "model").write_text("done")
        return {}

    monkeypatch.setattr(training, "train_shapes_clip", quick)
    path = training.trained_shapes_clip(tmp_path)
    assert (path / "model").read_text() == "done"
    assert path.name == f"shapes-clip-{training.recipe_hash()}"
    monkeypatch.setattr(training, "train_shapes_clip", broken)
    assert training.trained_shapes_clip(tmp_path) == path  # reused, not retrained


def test_recipe_hash_follows_the_recipe() -> None:
    assert training.recipe_hash() == training.recipe_hash()
    assert training.recipe_hash({**training.RECIPE, "steps": 1}) != training.recipe_hash()


# ---------------------------------------------------------------- trained model quality


@pytest.mark.slow
def test_trained_clip_is_cached(shapes_clip_dir: Path) -> None:
    started = time.perf_counter()
    assert training.trained_shapes_clip() == shapes_clip_dir
    assert time.perf_counter() - started < 10
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor.from_pretrained(shapes_clip_dir)
    assert processor.size == {"shortest_edge": 32} and processor.crop_size == {"height": 32, "width": 32}
    # Training preprocessed with the processor it saved; the reloaded one must give the same pixels.
    pictures = [picture for picture, _ in make_pictures(1, seed=5)]
    trained_with = training.models.image_processor(32)(images=pictures, return_tensors="pt").pixel_values
    assert torch.equal(processor(images=pictures, return_tensors="pt").pixel_values, trained_with)


@pytest.mark.slow
def test_trained_clip_retrieves_fresh_pictures(shapes_clip_dir: Path) -> None:
    # Fresh pictures: neither the training seed nor the folder fixture's seed.
    assert training.RECIPE["data_seed"] not in (98765, SHAPES_FOLDER_SEED)
    metrics = training.retrieval_metrics(shapes_clip_dir, per_class=10, seed=98765)
    assert metrics["text_p@5"] >= 0.9, metrics
    assert metrics["image_top1"] >= 0.9, metrics
    assert metrics["image_top1_distractors"] >= 0.9, metrics
    assert metrics["text_p@5_worst_template"] >= 0.85, metrics  # every template was learnt
