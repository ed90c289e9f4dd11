"""A SentencePiece-BPE tokenizer built from a GGUF's metadata (`tokenizer.ggml.model == "llama"`, e.g. Gemma-3).

transformers 5.17 loads Gemma-3's GGUF tokenizer (GemmaTokenizer over GGUFGemmaConverter) as a Unigram model
whose log-probabilities are the file's scores; these are BPE merge ranks (-0, -1, -2...), so Viterbi prefers
two frequent short pieces to one rarer long one (`▁nach` comes out as `▁n`, `ach`), and it adds no BOS
although the file says `tokenizer.ggml.add_bos_token = true`. This module builds the tokenizer from the
file's tokens, scores and token types instead, encoding as llama.cpp's SPM tokenizer (SentencePiece BPE) does:

1. user-defined pieces (GGUF token type 4: Gemma's runs of "\\n", "\\t" and real spaces, `<b>`, `</td>`,
   `[multimodal]`...) are matched first on the raw text, longest match left to right, and are atomic;
2. in the rest, " " becomes "▁"; a "▁" is prepended only if `tokenizer.ggml.add_space_prefix` (not Gemma);
   there is no whitespace splitting: merges cross "▁";
3. from single characters, the adjacent pair whose concatenation is a piece with the highest score is merged
   (ties: the leftmost pair), until no pair is a piece;
4. a symbol left that is not a piece becomes its UTF-8 bytes as `<0xXX>` byte pieces (type 6);
5. BOS first if `add_bos_token`, EOS last if `add_eos_token`.

A merge may only produce a *normal* piece (type 1), and only from normal pieces. SentencePiece keeps control
(3), unknown (2) and byte (6) pieces out of its merge table (`<eos>` typed by a user stays text, a byte piece
is only a fallback); a user-defined piece can never be formed by merging, since every occurrence of its text
was matched in step 1 before merging starts; unused pieces (5) are merged through and re-split by
SentencePiece, which merges cannot express (a file with such pieces would differ where they are reached;
Gemma-3 has none).

How step 3 becomes a `tokenizers` BPE: every split of a normal piece into two normal pieces is a merge, and
the merges are ranked by the piece's score, highest first, so "the pair of lowest rank" is "the pair whose
piece has the highest score", and BPE's leftmost tie-break is SentencePiece's. The splits of one piece get
consecutive ranks (longer left part first, as transformers' own SentencePiece extractor orders them). In
theory this differs from step 3 only where two *different* splits of one piece are candidates at the same
time (BPE takes the lower rank, SentencePiece the leftmost); no such case was found in all 177,748 distinct
lines of the paper's data, 500,000 fuzzed strings on Gemma-3's vocabulary and 500 random small vocabularies
(tests/test_gguf_tokenizer.py compares a sample of them on every run).

One deliberate exception to SentencePiece: control pieces (`<bos>`, `<eos>`, `<start_of_turn>`...) written
literally in the text are parsed as those tokens (transformers' default, which chat templates rely on), where
SentencePiece would encode them as text.

Saved with `save_pretrained`, the folder's tokenizer_config.json names `TokenizersBackend`, the class that
loads tokenizer.json as it is: `AutoTokenizer.from_pretrained(folder)` gives the same encoding, also beside a
gemma3 config.json (a model-specific class such as GemmaTokenizer would rebuild the tokenizer from
vocabulary and merges with its own normalizer and pre-tokenizer).
"""
from dataclasses import dataclass
from pathlib import Path

# GGUF token types (llama.cpp's llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPM_MODEL = "llama"  # tokenizer.ggml.model of SentencePiece vocabularies (Llama 1/2, Gemma, Mistral v1...)
SPACE = "▁"  # U+2581, SentencePiece's visible space


@dataclass(frozen=True)
class TokenizerFields:
    """The tokenizer fields of a GGUF file (`tokenizer.ggml.*`); ids are None where the file has none.

    add_bos / add_eos / add_space_prefix missing from a "llama" file take llama.cpp's defaults for
    SentencePiece (True, False, True); for other models False.
    """
    model: str  # tokenizer.ggml.model: "llama" (SentencePiece), "gpt2" (byte-level BPE), ...
    tokens: tuple[str, ...]
    scores: tuple[float, ...]  # empty where the file has none (byte-level BPE files)
    types: tuple[int, ...]
    bos_id: int | None
    eos_id: int | None
    unk_id: int | None
    pad_id: int | None
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    chat_template: str | None = None


def read_tokenizer_fields(path_or_reader):
    """The TokenizerFields of a GGUF file, from its path or an open `gguf.GGUFReader` (opening one reads
    the whole header: about 10 s for Gemma-3's 262,144 tokens)."""
    import gguf

    if isinstance(path_or_reader, gguf.GGUFReader):
        reader, name = path_or_reader, "GGUF"
    else:
        reader, name = gguf.GGUFReader(Path(path_or_reader)), str(path_or_reader)

    def value(key, default=None):
        field = reader.get_field(f"tokenizer.{key}")
        return default if field is None else field.contents()

    model = value("ggml.model")
    if model is None:
        raise ValueError(f"{name}: no tokenizer.ggml.model (no tokenizer in this file)")
    spm = model == SPM_MODEL
    tokens = tuple(value("ggml.tokens", ()))
    types = tuple(value("ggml.token_type", ())) or (NORMAL,) * len(tokens)
    scores = tuple(value("ggml.scores", ()))
    if len(types) != len(tokens) or (scores and len(scores) != len(tokens)):
        raise ValueError(f"{name}: {len(tokens)} tokens, {len(scores)} scores, {len(types)} token types")
    return TokenizerFields(
        model=model, tokens=tokens, scores=scores, types=types,
        bos_id=value("ggml.bos_token_id"), eos_id=value("ggml.eos_token_id"),
        unk_id=value("ggml.unknown_token_id"), pad_id=value("ggml.padding_token_id"),
        add_bos=bool(value("ggml.add_bos_token", spm)), add_eos=bool(value("ggml.add_eos_token", False)),
        add_space_prefix=bool(value("ggml.add_space_prefix", spm)), chat_template=value("chat_template"),
    )


def spm_merges(tokens, scores, types):
    """The BPE merges (left, right) that reproduce SentencePiece's score-driven merging: every split of a
    normal piece into two normal pieces, ranked by the piece's score (highest first; equal scores by id),
    the splits of one piece longer left part first."""
    normal = {piece for piece, kind in zip(tokens, types) if kind == NORMAL}
    ranked = []
    for piece_id, (piece, kind) in enumerate(zip(tokens, types)):
        if kind != NORMAL:
            continue
        for cut in range(len(piece) - 1, 0, -1):
            left, right = piece[:cut], piece[cut:]
            if left in normal and right in normal:
                ranked.append((-scores[piece_id], piece_id, -cut, left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def spm_tokenizer_from_gguf(fields):
    """A transformers tokenizer (PreTrainedTokenizerFast, i.e. TokenizersBackend) that encodes as llama.cpp's
    SentencePiece tokenizer does (module docstring), from read_tokenizer_fields' result.

    ValueError for a file whose tokenizer model is not "llama" (for "gpt2", byte-level BPE, use
    transformers' own GGUF loader) or that lacks what SentencePiece needs.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    if fields.model != SPM_MODEL:
        raise ValueError(f"GGUF tokenizer model {fields.model!r} is not SentencePiece ({SPM_MODEL!r}): "
                         f"spm_tokenizer_from_gguf builds only those; use transformers' GGUF loader for it")
    if len(fields.scores) != len(fields.tokens):
        raise ValueError(f"SentencePiece GGUF tokenizer without one score per token "
                         f"({len(fields.scores)} scores, {len(fields.tokens)} tokens)")
    if len(set(fields.tokens)) != len(fields.tokens):
        raise ValueError("SentencePiece GGUF tokenizer with repeated tokens")
    byte_pieces = sum(kind == BYTE for kind in fields.types)
    if byte_pieces != 256:
        raise ValueError(f"SentencePiece GGUF tokenizer with {byte_pieces} byte pieces (<0x00>...<0xFF>), not 256")

    def token(token_id):
        return None if token_id is None or not 0 <= token_id < len(fields.tokens) else fields.tokens[token_id]

    vocab = {piece: piece_id for piece_id, piece in enumerate(fields.tokens)}
    bpe = models.BPE(vocab=vocab, merges=spm_merges(fields.tokens, fields.scores, fields.types),
                     unk_token=token(fields.unk_id), byte_fallback=True, fuse_unk=False, dropout=None)
    tok = Tokenizer(bpe)
    replace_space = normalizers.Replace(" ", SPACE)
    tok.normalizer = (normalizers.Sequence([normalizers.Prepend(SPACE), replace_space])
                      if fields.add_space_prefix else replace_space)
    decoder = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if fields.add_space_prefix:
        decoder.append(decoders.Strip(content=" ", left=1, right=0))
    tok.decoder = decoders.Sequence(decoder)
    # normalized=False: matched on the raw text, before " " -> "▁" (runs of real spaces are user-defined)
    tok.add_special_tokens([AddedToken(piece, special=True, normalized=False)
                            for piece, kind in zip(fields.tokens, fields.types) if kind in (CONTROL, UNKNOWN)])
    tok.add_tokens([AddedToken(piece, special=False, normalized=False)
                    for piece, kind in zip(fields.tokens, fields.types) if kind == USER_DEFINED])
    extra = {"chat_template": fields.chat_template} if fields.chat_template else {}
    # add_bos_token / add_eos_token make TokenizersBackend write the BOS/EOS post-processor (also on reload)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=token(fields.bos_id), eos_token=token(fields.eos_id),
        unk_token=token(fields.unk_id), pad_token=token(fields.pad_id),
        add_bos_token=fields.add_bos, add_eos_token=fields.add_eos,
        clean_up_tokenization_spaces=False, padding_side="left", **extra)
