"""Report text processing: MIMIC-CXR section extraction, sentence splitting and the left/right word swap of a
horizontal flip.

The official builder (``codes/prior/data/pretrain/text_process.py``) extracts sections with the MIMIC-CXR
sectioner plus the LOVT header-normalisation table and splits sentences with Stanza, whose model needs a download.
We keep the section logic (header variants mapped to ``findings`` / ``impression``) and split sentences with a
regular expression [ours] that respects common abbreviations and decimal numbers.
"""

from __future__ import annotations

import re

__all__ = ["SECTION_ALIASES", "extract_sections", "split_sentences", "report_sentences", "swap_left_right",
           "BUILTIN_WORDS"]

# Header spellings seen in MIMIC-CXR reports -> the section they belong to (after LOVT's normalisation table).
SECTION_ALIASES: dict[str, str] = {
    "findings": "findings", "finding": "findings", "findings and impression": "findings",
    "findings/impression": "findings", "report": "findings", "chest, two views": "findings",
    "pa and lateral views of the chest": "findings", "frontal and lateral views of the chest": "findings",
    "impression": "impression", "impressions": "impression", "conclusion": "impression", "conclusions": "impression",
    "summary": "impression", "opinion": "impression", "diagnosis": "impression", "interpretation": "impression",
    "indication": "indication", "indications": "indication", "history": "history", "clinical history": "history",
    "comparison": "comparison", "comparisons": "comparison", "technique": "technique", "examination": "examination",
    "exam": "examination", "procedure": "technique", "wet read": "wet_read", "reason for exam": "indication",
    "notification": "notification", "recommendation": "recommendation", "recommendations": "recommendation",
    "addendum": "addendum", "final report": "final_report",
}

_HEADER = re.compile(r"^\s*([A-Za-z][A-Za-z ,/&]{1,60}?)\s*:", re.MULTILINE)
_ABBREV = ("dr", "mr", "mrs", "ms", "vs", "approx", "fig", "e.g", "i.e", "etc", "st", "pt")
_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


def extract_sections(text: str) -> dict[str, str]:
    """Split a free-text report at ``HEADER:`` lines into ``{section: text}`` (headers normalised with
    :data:`SECTION_ALIASES`; unknown headers keep their lower-case spelling). Text before the first header is
    ``preamble``; a section that appears twice is concatenated."""
    sections: dict[str, str] = {}
    matches = list(_HEADER.finditer(text))
    starts = [m.start() for m in matches] + [len(text)]
    if not matches or starts[0] > 0:
        pre = text[: starts[0]].strip()
        if pre:
            sections["preamble"] = pre
    for m, end in zip(matches, starts[1:]):
        header = " ".join(m.group(1).lower().split())
        name = SECTION_ALIASES.get(header, header)
        body = " ".join(text[m.end() : end].split())
        if body:
            sections[name] = f"{sections[name]} {body}".strip() if name in sections else body
    return sections


def split_sentences(text: str) -> list[str]:
    """Split a section into sentences at ``. ! ?`` followed by whitespace and a capital/digit, keeping
    abbreviations (``Dr.``, ``approx.``, ``e.g.``) and decimals (``1.5 cm``) intact; whitespace is normalised and
    empty pieces and bare punctuation are dropped."""
    text = " ".join(text.split())
    if not text:
        return []
    pieces, current = [], ""
    for piece in _SPLIT.split(text):
        current = f"{current} {piece}".strip() if current else piece
        last = current.rsplit(" ", 1)[-1].rstrip(".").lower()
        if last in _ABBREV and current.endswith("."):
            continue
        pieces.append(current)
        current = ""
    if current:
        pieces.append(current)
    return [p for p in pieces if re.search(r"[A-Za-z]", p)]


def report_sentences(text: str, sections: tuple[str, ...] = ("impression", "findings")) -> list[str]:
    """Sentences of the given sections in that order (official: impression, then findings)."""
    parts = extract_sections(text)
    out: list[str] = []
    for name in sections:
        out += split_sentences(parts.get(name, ""))
    return out


_LR = re.compile(r"\b(left|right|Left|Right|LEFT|RIGHT)\b")
_SWAP = {"left": "right", "right": "left", "Left": "Right", "Right": "Left", "LEFT": "RIGHT", "RIGHT": "LEFT"}


def swap_left_right(sentence: str) -> str:
    """Exchange the words left and right (case kept): the text of a horizontally flipped image [ours]."""
    return _LR.sub(lambda m: _SWAP[m.group(0)], sentence)


# Vocabulary of the built-in WordPiece tokenizer of the `tiny` text encoder (lower case; any other word is spelt
# with character pieces, so no text is out of vocabulary).
_WORDS = """
the a an of in on at to and or with without is are was were be been there this that these those it its
no not nor any new old again since prior previous previously compared comparison unchanged stable
interval change changes changed improved improving worsened worsening increased decreased resolved
left right bilateral both upper mid middle lower lobe lobes zone zones lung lungs apex apical base basal basilar
hilar perihilar retrocardiac lingula costophrenic angle angles hemithorax hemidiaphragm diaphragm
heart cardiac size silhouette mediastinum mediastinal contour contours hilum hila aorta aortic knob tortuous
normal within limits enlarged enlargement mildly mild moderate moderately severe severely large small tiny
focal patchy diffuse multifocal streaky linear subsegmental segmental dense faint subtle
consolidation consolidations opacity opacities opacification airspace disease pneumonia infection aspiration
atelectasis atelectatic collapse scarring effusion effusions pleural fluid layering thickening
cardiomegaly cardiomediastinal edema pulmonary vascular congestion interstitial markings prominence
pneumothorax pneumothoraces lucency rim line visible seen identified noted demonstrated present evident
appreciated observed suggests suggestive concerning possible possibly likely probable may could represent
tube tubes catheter line lines device devices pacemaker wires sternotomy clips endotracheal nasogastric
enteric tip terminates projects over courses side port svc atrium stomach
foreign object objects body bodies metallic button coin jewelry artifact
covid viral ground glass peripheral rounded
bony structures osseous fracture fractures intact degenerative spine thoracic ribs rib soft tissues
clear well expanded inflated aerated expansion volume volumes low lung otherwise unremarkable acute process
cardiopulmonary findings impression evidence sign signs of for which may be due
chest radiograph frontal lateral view views pa ap portable upright supine semi
measuring measures approximately about cm mm size sized
"""
BUILTIN_WORDS: tuple[str, ...] = tuple(_WORDS.split())
