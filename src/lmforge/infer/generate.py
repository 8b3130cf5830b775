"""Generation: prefill the prompts in one pass, then decode one token per step from a KV cache.

    prefill   the whole prompt goes through the model once; every layer's keys and values
              land in the cache, and the last position's logits pick the first new token
    decode    each step feeds only the newest token; attention reads the cached keys and
              values, so a step costs one position's work instead of the whole sequence's

The cache is preallocated (`StaticCache`): each layer gets buffers for the longest sequence
up front and a step writes one column in place, instead of growing tensors by
concatenation. Prompts of different lengths are padded on the left, so every sequence's
newest token sits in the last column; the attention mask hides the padding and positions
count real tokens only (as Hugging Face does), so a padded prompt decodes exactly as it
would alone.

Choosing tokens: `Sampling` (penalties, temperature, top-k, top-p, min-p; greedy at
temperature 0), or beam search. Beam search keeps the `num_beams` best partial sequences by
summed log-probability; a sequence that emits a stop token is finished with the score
sum / length ** length_penalty (length = new tokens, the stop token included), and the
search ends when no running beam can beat the finished ones (Hugging Face's heuristic:
the best running score divided by the current length), or at once when every beam has
finished with `early_stopping=True`, or at `max_new_tokens`.

A decoder-only model that reaches its context (`block_size`) keeps going on a sliding
window: each step then re-reads the last `block_size` tokens, as a model without a cache
would. Beam search stops at the context instead.

Prefill and decode may run on two copies of the weights (`decode_model`; see
`lmforge.infer.precision`): prefill multiplies the whole prompt by each weight, so it is
bound by arithmetic, while a decode step multiplies one token by each, so it is bound by
reading the weights, which fewer bytes (bf16) speed up. The cache keeps the prefill's
precision, and attention runs in it (`MultiHeadAttention`), so a bf16 decode copy still
attends in fp32, which is fast on every CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from lmforge.errors import LmforgeError
from lmforge.infer.sampling import Sampling
from lmforge.nn.cache import KVCache, LayerCache

PAD = -1  # placeholder for padding in token matrices: never a token, ignored by penalties


@dataclass
class Generation:
    ids: list[int]  # the new tokens, stop token excluded
    finish_reason: str  # "stop" (a stop token) or "length" (max_new_tokens)
    logprobs: list[float] = field(default_factory=list)  # of each id, if asked for
    score: float | None = None  # beam search: the finished sequence's score


class StaticLayerCache(LayerCache):
    """Keys and values in buffers allocated once for `capacity` positions."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.used = 0

    @property
    def length(self) -> int:
        return self.used

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = k.size(-2)
        if self.k is None:
            shape = (*k.shape[:-2], self.capacity, k.size(-1))
            self.k, self.v = k.new_empty(shape), v.new_empty(shape)
        if self.used + t > self.capacity:
            raise LmforgeError(f"the KV cache holds {self.capacity} positions; it is full")
        self.k[..., self.used : self.used + t, :] = k
        self.v[..., self.used : self.used + t, :] = v
        self.used += t
        return self.k[..., : self.used, :], self.v[..., : self.used, :]


class StaticCache(KVCache):
    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity

    def layer(self, i: int) -> LayerCache:
        while len(self.layers) <= i:
            self.layers.append(StaticLayerCache(self.capacity))
        return self.layers[i]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep the rows in `index` (beam search follows its surviving beams)."""
        for layer in self.layers:
            if layer.k is not None:
                layer.k, layer.v = layer.k[index], layer.v[index]
            if layer.cross is not None:
                layer.cross = (layer.cross[0][index], layer.cross[1][index])


class _Decoder:
    """One model, one batch: feeds token columns through the model with the cache, the
    mask and the positions, and says what comes back. The prompt goes through `model`, the
    decode steps through `decode_model` (by default the same)."""

    def __init__(
        self, model, prompts: list[list[int]], capacity: int, source=None, decode_model=None
    ):
        self.model = model
        self.decode_model = decode_model or model
        self.device = next(model.parameters()).device
        self.encoder_decoder = model.config.arch == "encoder-decoder"
        width = max(map(len, prompts))
        self.tokens = torch.full((len(prompts), width), PAD, dtype=torch.long, device=self.device)
        for row, prompt in enumerate(prompts):
            self.tokens[row, width - len(prompt) :] = torch.tensor(prompt, device=self.device)
        self.cache = StaticCache(capacity)
        self.capacity = capacity
        self.source = source  # encoder-decoder: (encoder output, source mask)
        self._hidden: dict[torch.dtype, torch.Tensor] = {}

    @property
    def mask(self) -> torch.Tensor:
        return (self.tokens != PAD).long()

    def prefill(self, window: int | None = None) -> torch.Tensor:
        """Logits (batch, vocab) after the prompts (or the last `window` tokens)."""
        self.cache = StaticCache(self.capacity)
        return self._run(self.model, self.tokens[:, -(window or self.tokens.size(1)) :])

    def step(self, next_ids: torch.Tensor) -> torch.Tensor:
        """Append one column of tokens (PAD where a sequence has finished); logits after it."""
        self.tokens = torch.cat([self.tokens, next_ids[:, None]], dim=1)
        if self.cache.length + 1 > self.model.config.block_size:  # slide: re-read the window
            return self.prefill(self.model.config.block_size)
        return self._run(self.decode_model, self.tokens[:, -1:])

    def _encoder_hidden(self, dtype: torch.dtype) -> torch.Tensor:
        """The encoder output in a decoding model's dtype, converted once."""
        if dtype not in self._hidden:
            self._hidden[dtype] = self.source[0].to(dtype)
        return self._hidden[dtype]

    def _run(self, model, columns: torch.Tensor) -> torch.Tensor:
        window = self.tokens[:, -(self.cache.length + columns.size(1)) :]
        mask = (window != PAD).long()
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -columns.size(1) :]
        ids = columns.clamp(min=0)
        full = bool(mask.all())
        if self.encoder_decoder:
            source_mask = self.source[1]
            body = model.body(
                None,
                source_mask,
                decoder_input_ids=ids,
                decoder_attention_mask=None if full else mask,
                encoder_hidden=self._encoder_hidden(_dtype(model)),
                cache=self.cache,
            )
        else:
            padded = {} if full else {"attention_mask": mask, "positions": positions}
            body = model.body(ids, cache=self.cache, **padded)
        # Only the last position's logits are needed: the head (vocabulary x width, the
        # largest matrix) runs once, not once per prompt token.
        body.hidden = body.hidden[:, -1:]
        return model.head(body)[:, -1].float()


def _dtype(model) -> torch.dtype:
    """The dtype a model computes in: its embedding table's (int8 layers keep activations
    in it)."""
    return model.tok_embed.weight.dtype


def _check(model, prompts, max_new_tokens, num_beams):
    if not prompts or any(len(p) == 0 for p in prompts):
        raise LmforgeError("a prompt is empty after tokenization; give some text")
    if max_new_tokens < 0:
        raise LmforgeError(f"max_new_tokens must be >= 0 (got {max_new_tokens})")
    if num_beams < 1:
        raise LmforgeError(f"num_beams must be at least 1 (got {num_beams})")
    block = model.config.block_size
    longest = max(map(len, prompts))
    if longest > block and model.config.arch != "encoder-decoder":
        raise LmforgeError(
            f"the prompt has {longest} tokens but the model's context is {block}; shorten it"
        )
    if model.config.head != "lm":
        raise LmforgeError(
            f"this model has a '{model.config.head}' head; generation needs a language-model head"
        )


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int = 64,
    sampling: Sampling | None = None,
    *,
    stop_ids: Sequence[int] = (),
    seed: int | None = None,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    early_stopping: bool = False,
    logprobs: bool = False,
    decoder_start_id: int | None = None,
    on_token: Callable[[int, int], bool] | None = None,
    decode_model: torch.nn.Module | None = None,
) -> list[Generation]:
    """Continue each prompt (a list of token ids); one `Generation` per prompt.

    For an encoder-decoder the prompts are the sources, and the target starts from
    `decoder_start_id`. `logprobs` records the log-probability of each chosen token under
    the model (before any filter or penalty). `on_token(row, id)` is called for each new
    token as it is chosen (not in beam search, whose beams change until the end); when it
    returns True that sequence ends there (a stop string, say). `decode_model`, the same
    model in another precision (`lmforge.infer.precision.inference_models`), runs the decode
    steps; the prompts go through `model`."""
    prompts = [list(p) for p in prompts]
    sampling = sampling or Sampling()
    _check(model, prompts, max_new_tokens, num_beams)
    was_training = model.training
    model.eval()
    if decode_model is not None:
        decode_model.eval()
    try:
        if model.config.arch == "encoder-decoder":
            if decoder_start_id is None:
                raise LmforgeError("an encoder-decoder needs decoder_start_id to begin the target")
            source = _encode_sources(model, prompts, num_beams)
            starts = [[decoder_start_id]] * len(prompts)
            capacity = min(max_new_tokens + 1, model.config.block_size)
            if num_beams > 1:
                return _beam_search(
                    model, starts, source, capacity, max_new_tokens, num_beams, length_penalty,
                    early_stopping, stop_ids, sampling, decode_model,
                )  # fmt: skip
            decoder = _Decoder(model, starts, capacity, source, decode_model)
        else:
            if num_beams > 1:
                longest = max(map(len, prompts))
                capacity = min(longest + max_new_tokens, model.config.block_size)
                return _beam_search(
                    model, prompts, None, capacity, capacity - longest, num_beams,
                    length_penalty, early_stopping, stop_ids, sampling, decode_model,
                )  # fmt: skip
            capacity = min(max(map(len, prompts)) + max_new_tokens, model.config.block_size)
            decoder = _Decoder(model, prompts, capacity, None, decode_model)
        return _sample(decoder, max_new_tokens, sampling, stop_ids, seed, logprobs, on_token)
    finally:
        model.train(was_training)


def _encode_sources(model, sources: list[list[int]], repeat: int):
    width = max(map(len, sources))
    device = next(model.parameters()).device
    ids = torch.zeros((len(sources), width), dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for row, source in enumerate(sources):  # sources are padded on the right, as in HF
        ids[row, : len(source)] = torch.tensor(source, device=device)
        mask[row, : len(source)] = 1
    hidden = model.encode(ids, mask)
    if repeat > 1:
        hidden, mask = hidden.repeat_interleave(repeat, 0), mask.repeat_interleave(repeat, 0)
    return hidden, mask


def _sample(decoder: _Decoder, max_new_tokens, sampling, stop_ids, seed, want_logprobs, on_token):
    batch = decoder.tokens.size(0)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=decoder.device).manual_seed(seed)
    stops = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=decoder.device)
    results = [Generation([], "length") for _ in range(batch)]
    running = torch.ones(batch, dtype=torch.bool, device=decoder.device)
    if max_new_tokens == 0:
        return results
    logits = decoder.prefill()
    for step in range(max_new_tokens):
        chosen = sampling.choose(logits, decoder.tokens, generator)
        stopped = torch.isin(chosen, stops) & running
        if want_logprobs:
            picked = logits.log_softmax(-1).gather(1, chosen[:, None])[:, 0].tolist()
        for row in running.nonzero()[:, 0].tolist():
            if stopped[row]:
                results[row].finish_reason = "stop"
            else:
                results[row].ids.append(int(chosen[row]))
                if want_logprobs:
                    results[row].logprobs.append(picked[row])
                if on_token is not None and on_token(row, int(chosen[row])):
                    results[row].finish_reason = "stop"
                    stopped[row] = True
        running &= ~stopped
        if not running.any() or step == max_new_tokens - 1:
            break
        logits = decoder.step(torch.where(running, chosen, PAD))
    return results


def _beam_search(
    model, prompts, source, capacity, max_new_tokens, num_beams, length_penalty,
    early_stopping, stop_ids, sampling, decode_model=None,
) -> list[Generation]:  # fmt: skip
    """Beam search for each prompt; the beams of prompt b are rows b*k .. b*k+k-1."""
    k = num_beams
    device = next(model.parameters()).device
    batch = len(prompts)
    beams = [p for p in prompts for _ in range(k)]
    decoder = _Decoder(model, beams, capacity, source, decode_model)
    stops = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=device)
    keep = max(2, 1 + len(stops)) * k  # candidates per step: enough to refill k after stops
    running_score = torch.full((batch, k), -1e9, device=device)
    running_score[:, 0] = 0.0  # the k beams start equal; let only one of them expand
    new_tokens = torch.zeros((batch, k, 0), dtype=torch.long, device=device)
    finished: list[list[tuple[float, list[int], bool]]] = [[] for _ in range(batch)]
    can_improve = torch.ones(batch, dtype=torch.bool, device=device)
    if max_new_tokens == 0:
        return [Generation([], "length") for _ in range(batch)]
    logits = decoder.prefill()
    for step in range(max_new_tokens):
        logp = sampling.penalize(logits.log_softmax(-1), decoder.tokens)
        vocab = logp.size(-1)
        total = (logp.view(batch, k, vocab) + running_score[:, :, None]).view(batch, k * vocab)
        cand_score, cand = total.topk(keep, dim=-1)
        cand_beam, cand_token = cand // vocab, cand % vocab
        last = step == max_new_tokens - 1
        hits = torch.isin(cand_token, stops) | last
        length = step + 1  # new tokens including this one
        for b in range(batch):
            if not can_improve[b] or (early_stopping and len(finished[b]) == k):
                continue
            for rank in range(k):  # only the k best candidates may finish
                if hits[b, rank]:
                    tokens = new_tokens[b, cand_beam[b, rank]].tolist()
                    token = int(cand_token[b, rank])
                    by_stop = bool(torch.isin(cand_token[b, rank], stops))
                    if not by_stop:
                        tokens.append(token)
                    score = float(cand_score[b, rank]) / length**length_penalty
                    finished[b].append((score, tokens, by_stop))
            finished[b] = sorted(finished[b], key=lambda f: -f[0])[:k]
        # The k best candidates that did not stop carry on.
        alive = cand_score - hits.float() * 1e9
        best = alive.topk(k, dim=-1).indices
        beam = cand_beam.gather(1, best)
        running_score = alive.gather(1, best)
        rows = (beam + torch.arange(batch, device=device)[:, None] * k).view(-1)
        new_tokens = torch.cat(
            [new_tokens.gather(1, beam[:, :, None].expand(-1, -1, new_tokens.size(2))),
             cand_token.gather(1, best)[:, :, None]], dim=2,
        )  # fmt: skip
        # Hugging Face's heuristic: can the best running beam still beat the worst finished?
        best_possible = running_score[:, 0] / length**length_penalty
        for b in range(batch):
            full = len(finished[b]) == k
            if full and best_possible[b] <= finished[b][-1][0]:
                can_improve[b] = False
        done = all(
            not can_improve[b] or (early_stopping and len(finished[b]) == k) for b in range(batch)
        )
        if done or last:
            break
        decoder.tokens = decoder.tokens[rows]
        decoder.cache.reorder(rows)
        logits = decoder.step(new_tokens[:, :, -1].reshape(-1))
    results = []
    for b in range(batch):
        score, tokens, by_stop = finished[b][0]
        results.append(Generation(tokens, "stop" if by_stop else "length", score=score))
    return results
