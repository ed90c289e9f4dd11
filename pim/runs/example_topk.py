"""A running top-k per neuron on the device: the k largest activations seen so far, with where they were.

Order (the documented tie rule, docs/lape.md "Neuron examples"): a larger value first; among equal values
the earlier corpus (the order of the corpora), then the earlier line, then the earlier token position.
-0.0 is taken as 0.0. The order is total (no two candidates share a corpus, line and position), so the
result does not depend on how the texts are batched or in which order the batches come, up to float
rounding of the activations themselves.

Per batch (`add`): the selected neurons' activations [batch, seq, n] become one int64 key each, the
value's order-preserving bits in the high 32 bits and the candidate's rank in (line, position) order,
reversed, in the low 32 (pads: the smallest int64), so that one torch.topk over the batch picks its k
best exactly, ties included (torch.topk is not stable; unique keys make that irrelevant). These are then
merged with the running top-k by stable sorts of the 2k entries: position, line, corpus ascending, then
value descending. No host copy: `host()` copies the state once per commit.
"""
import numpy as np

EMPTY = np.iinfo(np.int64).max  # corpus, line and position of a slot that holds nothing yet
LOW_BITS = (1 << 32) - 1


def order_bits(values):
    """int64 of float32 `values` that orders as the values do (-0.0 and 0.0 alike)."""
    import torch

    bits = (values + 0.0).view(torch.int32).long()  # + 0.0 turns -0.0 into 0.0
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


def tie_order(values, corpus, line, position):
    """Indices [n, m] that sort each row by value descending, then corpus, line, position ascending."""
    import torch

    order = torch.argsort(position, dim=1, stable=True)
    for key, descending in ((line, False), (corpus, False), (values, True)):
        step = torch.argsort(key.gather(1, order), dim=1, descending=descending, stable=True)
        order = order.gather(1, step)
    return order


class RunningTopK:
    """values float32 [n, k], corpus, line, position int64 [n, k] (EMPTY where nothing is yet), ids int64
    [n, k, 2 * window + 1]: the token ids of positions position - window .. position + window (-1 outside
    the text); rows in the tie rule's order."""

    def __init__(self, neurons, k, window, device):
        import torch

        self.k, self.window, self.device = k, window, device
        self.values = torch.full((neurons, k), float("-inf"), dtype=torch.float32, device=device)
        self.corpus, self.line, self.position = (torch.full((neurons, k), EMPTY, dtype=torch.int64, device=device)
                                                 for _ in range(3))
        self.ids = torch.full((neurons, k, 2 * window + 1), -1, dtype=torch.int64, device=device)

    def load(self, state):
        """Take the arrays of `host()` back (a resumed run)."""
        import torch

        for name in ("values", "corpus", "line", "position", "ids"):
            setattr(self, name, torch.as_tensor(state[name]).to(self.device))

    def host(self):
        """The state as numpy arrays (one copy to the host)."""
        return {name: getattr(self, name).cpu().numpy() for name in ("values", "corpus", "line", "position", "ids")}

    def add(self, acts, mask, ids, corpus, lines):
        """Merge one batch: acts [batch, seq, n] the selected neurons' activations, mask bool [batch, seq]
        (left padding: False at pads), ids int64 [batch, seq] its token ids, `corpus` the corpus number,
        lines int64 [batch] each row's line number (on the device; no two equal)."""
        import torch

        batch, seq, n = acts.shape
        rows = torch.argsort(lines)  # the batch in line order: a flat index (row, s) then ranks (line, position)
        acts, mask, ids, lines = acts[rows], mask[rows], ids[rows], lines[rows]
        values = acts.float().permute(2, 0, 1).reshape(n, batch * seq)  # [n, batch * seq], line order
        rank = torch.arange(batch * seq, device=acts.device)
        keys = (order_bits(values) << 32) | (LOW_BITS - rank)  # a larger value, then an earlier place, first
        keys = keys.masked_fill(~mask.reshape(1, -1), torch.iinfo(torch.int64).min)
        top = torch.topk(keys, min(self.k, batch * seq), dim=1).values
        found = top != torch.iinfo(torch.int64).min  # False: a pad (a batch of fewer than k tokens)
        flat = (LOW_BITS - (top & LOW_BITS)).masked_fill(~found, 0)  # [n, k'] the candidates' places in the batch
        row, s = flat // seq, flat % seq
        lengths = mask.sum(1)
        new = {"values": values.gather(1, flat).masked_fill(~found, float("-inf")),
               "corpus": torch.full_like(flat, corpus).masked_fill(~found, EMPTY),
               "line": lines[row].masked_fill(~found, EMPTY),
               "position": (s - (seq - lengths[row])).masked_fill(~found, EMPTY),
               "ids": self._windows(ids, mask, row, s)}
        self._merge(new)

    def _windows(self, ids, mask, row, s):
        """int64 [n, k', 2 * window + 1]: the ids around each candidate, -1 outside its text."""
        import torch

        batch, seq = ids.shape
        w = self.window
        framed = torch.full((batch, seq + 2 * w), -1, dtype=torch.int64, device=ids.device)
        framed[:, w:w + seq] = ids.masked_fill(~mask, -1)
        at = (row * (seq + 2 * w) + s)[..., None] + torch.arange(2 * w + 1, device=ids.device)
        return framed.reshape(-1)[at]

    def _merge(self, new):
        import torch

        both = {name: torch.cat([getattr(self, name), new[name]], dim=1) for name in new}
        keep = tie_order(both["values"], both["corpus"], both["line"], both["position"])[:, :self.k]
        for name, tensor in both.items():
            index = keep if tensor.dim() == 2 else keep[..., None].expand(-1, -1, tensor.shape[-1])
            setattr(self, name, tensor.gather(1, index))
