"""An independent reference of SentencePiece-BPE encoding as llama.cpp's SPM tokenizer does it, written from a
GGUF's tokens, scores and token types alone (plain Python; shares no code with pim/models/gguf_tokenizer.py):

1. user-defined pieces (type 4) are cut out of the raw text first, longest match left to right;
2. each other fragment: " " -> "▁" ("▁" in front when add_space_prefix);
3. from single characters, merge the adjacent pair whose concatenation is a normal piece (type 1) of the
   highest score, the leftmost of equal scores (a heap of candidate pairs; stale entries are skipped);
4. a symbol that is not a normal piece becomes its UTF-8 bytes as byte pieces (type 6, `<0xXX>`);
5. BOS first / EOS last as the flags say.

Control pieces written in the text (`<eos>`) are text here, as in SentencePiece.
"""
import heapq

NORMAL_TYPE, USER_DEFINED_TYPE, BYTE_TYPE = 1, 4, 6


class SpmReference:
    def __init__(self, tokens, scores, types, *, bos_id, eos_id, unk_id, add_bos, add_eos, add_space_prefix):
        self.normal_ids = {t: i for i, (t, k) in enumerate(zip(tokens, types)) if k == NORMAL_TYPE}
        self.normal_scores = {t: scores[i] for t, i in self.normal_ids.items()}
        self.byte_ids = {int(t[3:5], 16): i for i, (t, k) in enumerate(zip(tokens, types)) if k == BYTE_TYPE}
        # user-defined pieces by first character, longest first
        self.user_defined = {}
        for i, (t, k) in enumerate(zip(tokens, types)):
            if k == USER_DEFINED_TYPE:
                self.user_defined.setdefault(t[0], []).append((t, i))
        for candidates in self.user_defined.values():
            candidates.sort(key=lambda item: -len(item[0]))
        self.bos_id, self.eos_id, self.unk_id = bos_id, eos_id, unk_id
        self.add_bos, self.add_eos, self.add_space_prefix = add_bos, add_eos, add_space_prefix

    def encode(self, text):
        ids = [self.bos_id] if self.add_bos else []
        for fragment in self.fragments(text):
            if isinstance(fragment, int):
                ids.append(fragment)
            else:
                ids.extend(self.encode_fragment(fragment))
        if self.add_eos:
            ids.append(self.eos_id)
        return ids

    def fragments(self, text):
        """The text as a list of user-defined ids (int) and the strings between them."""
        out, start, i = [], 0, 0
        while i < len(text):
            match = next(((piece, pid) for piece, pid in self.user_defined.get(text[i], ())
                          if text.startswith(piece, i)), None)
            if match is None:
                i += 1
                continue
            if start < i:
                out.append(text[start:i])
            out.append(match[1])
            i += len(match[0])
            start = i
        if start < len(text):
            out.append(text[start:])
        return out

    def encode_fragment(self, fragment):
        text = ("▁" if self.add_space_prefix else "") + fragment.replace(" ", "▁")
        symbols = list(text)  # symbols[i]: the text of the symbol starting at character i; None once merged away
        n = len(symbols)
        following = list(range(1, n)) + [None]
        preceding = [None] + list(range(n - 1))
        heap = []

        def offer(left, right):
            if left is None or right is None:
                return
            piece = symbols[left] + symbols[right]
            if piece in self.normal_scores:
                heapq.heappush(heap, (-self.normal_scores[piece], left, right, piece))

        for i in range(n - 1):
            offer(i, i + 1)
        while heap:
            _, left, right, piece = heapq.heappop(heap)
            if symbols[left] is None or symbols[right] is None or following[left] != right \
                    or symbols[left] + symbols[right] != piece:
                continue  # stale: one side has changed since the pair was offered
            symbols[left], symbols[right] = piece, None
            following[left] = following[right]
            if following[left] is not None:
                preceding[following[left]] = left
            offer(preceding[left], left)
            offer(left, following[left])

        ids = []
        for symbol in symbols:
            if symbol is None:
                continue
            if symbol in self.normal_ids:
                ids.append(self.normal_ids[symbol])
            else:
                ids.extend(self.byte_ids.get(b, self.unk_id) for b in symbol.encode("utf-8"))
        return ids
