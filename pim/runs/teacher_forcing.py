"""Teacher-forced passes over a text file (no generation): corpus statistics and perplexity share them.

A text file holds one text per line (a literal \\n is a newline, lines are stripped). Each text is
tokenized as inference tokenizes a prompt (the tokenizer's special tokens included), cut to its first
`max_length` tokens, and batches are left-padded; pad positions are never counted (the recorder's
positions="all" reads the attention mask) nor scored.
"""
from pim.activation_files import FormatError, read_input_lines
from pim.cli import UserError


def read_texts(path):
    """The texts of a file, one per line; a missing file, bad UTF-8 or an empty line is a UserError naming it."""
    try:
        return read_input_lines(path, "text", "corpora: `make data`; or write one text per line there")
    except FormatError as e:
        raise UserError(str(e)) from None


def load(model_name, dtype="auto", record=True):
    """The model of MODEL (pim/models/loading.py: placed as --device-map auto places it), its left-padding
    tokenizer; recording every non-pad position when `record`."""
    from pim.models.loading import LoadOptions, load_model

    return load_model(LoadOptions(model_name, dtype=dtype), positions="all", record=record)


def encode(tokenizer, texts, max_length):
    """(token ids per text, each cut to its first max_length tokens; how many texts were cut)."""
    ids = tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    cut = sum(len(row) > max_length for row in ids)
    return [row[:max_length] for row in ids], cut


def left_padded(rows, pad_id, device):
    """(input_ids, attention_mask) [batch, longest] of token id lists, padded on the left."""
    import torch

    longest = max(map(len, rows))
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, longest - len(row):] = torch.tensor(row)
            mask[i, longest - len(row):] = 1
    return ids.to(device), mask.to(device)


def nll_sum(model, ids, mask):
    """(sum of the token NLL, number of scored tokens): each position predicts the next non-pad token;
    the first token of each text is not scored (nothing predicts it)."""
    import torch

    logits = model(input_ids=ids, attention_mask=mask).logits
    target = ids[:, 1:]
    scored = (mask[:, 1:] * mask[:, :-1]).bool()
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, target[..., None])[..., 0]
    return float(-(logp[scored]).double().sum()), int(scored.sum())
