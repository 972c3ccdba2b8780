"""The real Stable Diffusion 1.5 CLIP tokenizer, rebuilt offline from the BPE vocabulary file that the
`open-clip-torch` wheel ships (`open_clip/bpe_simple_vocab_16e6.txt.gz`).

vocab.json = 256 byte tokens, the same 256 with `</w>`, the 48,894 merged tokens of merge lines
1..48894, then `<|startoftext|>` and `<|endoftext|>` (49,408 entries); merges.txt = `#version: 0.2`
plus those merge lines. Built this way the files are identical to SD 1.5's tokenizer files."""
from __future__ import annotations

import gzip
import importlib.util
import json
import os
from pathlib import Path

from transformers import CLIPTokenizer

from common.checkpoints import atomic_write
from common.errors import UserInputError

from .text_encoders import MINILM, load_pretrained_tokenizer, pretrained_folder

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 49152 - 256 - 2  # CLIP's vocabulary size minus byte tokens and the two special tokens
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


def bytes_to_unicode() -> dict[int, str]:
    """CLIP / GPT-2 byte -> printable unicode table (whitespace and control bytes moved above 255)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, codes)}


def find_bpe_vocab() -> Path:
    """Locate the gzipped BPE file inside the installed open_clip package (without importing it)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise UserInputError("the CLIP vocabulary needs the `open-clip-torch` package "
                             "(pip install --no-deps open-clip-torch)")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / VOCAB_FILE
        if path.is_file():
            return path
    raise UserInputError(f"{VOCAB_FILE} not found inside the installed open_clip package")


def build_vocab_and_merges(bpe_gz: Path) -> tuple[dict[str, int], list[str]]:
    """Rebuild (vocab, merge lines) exactly as CLIP's own tokenizer derives them."""
    lines = gzip.open(bpe_gz).read().decode("utf-8").split("\n")
    merges = lines[1:NUM_MERGES + 1]  # line 0 is the version header
    byte_tokens = list(bytes_to_unicode().values())
    tokens = byte_tokens + [t + "</w>" for t in byte_tokens]
    tokens += ["".join(m.split()) for m in merges]
    tokens += list(SPECIAL_TOKENS)
    return {tok: i for i, tok in enumerate(tokens)}, merges


def write_tokenizer_files(out_dir: str | os.PathLike) -> Path:
    """Write vocab.json + merges.txt + special_tokens_map/tokenizer_config into `out_dir`."""
    out_dir = Path(out_dir)
    vocab, merges = build_vocab_and_merges(find_bpe_vocab())

    def write_text(name: str, text: str) -> None:
        def write(tmp: str) -> None:
            Path(tmp).write_text(text, encoding="utf-8")
        atomic_write(out_dir / name, write)

    write_text("vocab.json", json.dumps(vocab, ensure_ascii=False))
    write_text("merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n")
    return out_dir


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edit_diffusion" / "clip_tokenizer"


def load_clip_tokenizer(cache_dir: str | os.PathLike | None = None) -> CLIPTokenizer:
    """The SD 1.5 CLIP tokenizer (model_max_length 77), rebuilt once into `cache_dir`."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if not (cache_dir / "vocab.json").is_file() or not (cache_dir / "merges.txt").is_file():
        write_tokenizer_files(cache_dir)
    # SD 1.5 pads with <|endoftext|> (the default pad token) to 77 tokens.
    return CLIPTokenizer.from_pretrained(str(cache_dir), model_max_length=77, local_files_only=True)


def load_tokenizer(spec: str | None):
    """`None` or "clip" -> rebuilt SD 1.5 tokenizer; "minilm" -> all-MiniLM-L6-v2's; otherwise a local tokenizer
    folder: a CLIP one (vocab.json + merges.txt) as CLIPTokenizer, any other through AutoTokenizer."""
    if spec is None or spec == "clip":
        return load_clip_tokenizer()
    path = pretrained_folder(spec)
    if path is None:
        raise UserInputError(f"--tokenizer {spec}: not a folder (use 'clip' for the SD 1.5 CLIP tokenizer or "
                             f"'{MINILM}' for all-MiniLM-L6-v2's)")
    if not (path / "merges.txt").is_file():
        return load_pretrained_tokenizer(path)
    try:
        return CLIPTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, TypeError) as err:
        raise UserInputError(f"--tokenizer {spec}: not a CLIP tokenizer folder ({err})") from None
