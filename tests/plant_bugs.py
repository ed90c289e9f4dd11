#!/usr/bin/env python
"""Plant known bugs one at a time and report which test catches each (docs/testing.md).

Each mutation is (name, file, exact old text, new text, what the bug is, the tests to run). For each one
the script checks that the old text occurs exactly once (it stops, naming the mutation, if the code has
moved), writes the mutated file, and, for a file under modeling/ (the patched transformers' drop-in
copies), also writes it over the installed transformers package's copy (found by importing
transformers in the environment's python). It runs the listed tests with `pytest -x -q`, records the
first failing test (or MISSED), and restores every file it touched, with its old modification time:
always, on an error or Ctrl-C too. At the end it prints a table; the exit status is 1 if a bug was missed.

Not part of `make test` (it runs the tests once per bug: ~10-15 minutes on 2 cores):

    .venv/bin/python tests/plant_bugs.py                   # every mutation
    .venv/bin/python tests/plant_bugs.py --only gt-to-ge eos-counted-on
    .venv/bin/python tests/plant_bugs.py --check           # only check that every old text is still there
    .venv/bin/python tests/plant_bugs.py --baseline        # first run all the listed tests unmutated
    .venv/bin/python tests/plant_bugs.py --only eos-counted-on --tests tests/test_infer.py   # another test
"""
import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
TIMEOUT = 900  # seconds for the tests of one mutation
PYTEST = ["-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
ENV = {"PYTHONDONTWRITEBYTECODE": "1"}  # no .pyc of a mutated file is left behind


@dataclass
class Mutation:
    name: str
    file: str  # relative to ROOT
    old: str
    new: str
    description: str
    tests: tuple  # pytest node ids or files, relative to ROOT


REC = "modeling/activation_recorder.py"
MUTATIONS = [
    # --- the recorder (patched transformers) ---
    Mutation("gt-to-ge", REC, "torch.gt(acts, threshold, out=self.positive)",
             "torch.ge(acts, threshold, out=self.positive)",
             "the index counts activation >= 0 instead of > 0 (exact zeros count as fired)",
             ("tests/test_exact_zeros.py",)),
    Mutation("eq-to-le", REC, "torch.eq(acts, 0, out=self.eq_zero)", "torch.le(acts, 0, out=self.eq_zero)",
             "eq_zero counts <= 0 instead of == 0",
             ("tests/test_exact_zeros.py",)),
    Mutation("le-to-lt", REC, "torch.le(acts, 0, out=self.le_zero)", "torch.lt(acts, 0, out=self.le_zero)",
             "le_zero counts < 0 instead of <= 0 (exact zeros not suppressed)",
             ("tests/test_exact_zeros.py",)),
    Mutation("index-not-running-total", REC, "_write_index(self.files[1], self.active_counts)",
             "_write_index(self.files[1], counts)",
             "activate_file's index file holds the last generate call's counts, not the running total",
             ("tests/test_promises.py", "tests/test_promises_second.py")),
    Mutation("eos-counted-on", REC, "torch.where(self._hit, self._inf, previous, out=threshold)",
             "threshold.copy_(previous)",
             "a sequence that emitted EOS goes on being counted",
             ("tests/test_recorder.py::test_files_equal_hook_reference", "tests/test_infer.py")),
    Mutation("prefill-first-position", REC, "self._pending[layer] = activation[:, -1:].detach().clone()",
             "self._pending[layer] = activation[:, :1].detach().clone()",
             "at prefill the first prompt position is measured instead of the last",
             ("tests/test_exact_zeros.py",)),
    Mutation("right-padding-accepted", REC,
             "if mask is not None and mask.shape[0] > 1 and not bool(mask[:, -1].all()):",
             "if False:",
             "right-padded batches are recorded (their last position is a pad) instead of refused",
             ("tests/test_promises.py::test_right_padding_is_refused_and_writes_nothing",
              "tests/test_recorder.py::test_refusals")),
    Mutation("hooks-on-the-mlp", REC, "        sites.append(act)\n", "        sites.append(mlp)\n",
             "hook mode hooks the MLP's output instead of its activation module",
             ("tests/test_hooks.py", "tests/test_exact_zeros.py")),
    Mutation("hooks-layers-reversed", REC,
             "handles = [site.register_forward_hook(on_activation(i)) for i, site in enumerate(sites)]",
             "handles = [site.register_forward_hook(on_activation(len(sites) - 1 - i)) for i, site in enumerate(sites)]",
             "hook mode files each layer's activation under another layer",
             ("tests/test_hooks.py", "tests/test_exact_zeros.py")),
    Mutation("deactivation-not-applied", REC, "            activation = activation.index_fill(-1, off, 0)\n",
             "            activation.index_fill(-1, off, 0)\n",
             "deactivate={...}: the neurons are not set to 0 (the filled copy is dropped)",
             ("tests/test_positions_and_deactivation.py",)),
    Mutation("deactivation-after-recording", REC,
             "        if off is not None:\n            activation = activation.index_fill(-1, off, 0)\n"
             "        if self.positions == \"all\":\n            self._count_positions(layer, activation)\n"
             "        if activation.shape[1] == 1:\n            self._pending[layer] = activation\n"
             "        else:  # prefill: copy, so the whole prompt's activations are not kept alive\n"
             "            self._pending[layer] = activation[:, -1:].detach().clone()\n",
             "        if self.positions == \"all\":\n            self._count_positions(layer, activation)\n"
             "        if activation.shape[1] == 1:\n            self._pending[layer] = activation\n"
             "        else:  # prefill: copy, so the whole prompt's activations are not kept alive\n"
             "            self._pending[layer] = activation[:, -1:].detach().clone()\n"
             "        if off is not None:\n            activation = activation.index_fill(-1, off, 0)\n",
             "deactivation is applied after the activation was recorded (the model sees it, the counts do not)",
             ("tests/test_positions_and_deactivation.py",)),
    Mutation("positions-all-counts-pads", REC,
             'threshold = torch.where(on_device, 0.0, float("inf")).to(activation.dtype)',
             'threshold = torch.where(on_device, 0.0, 0.0).to(activation.dtype)',
             "positions='all' counts the pad positions (and finished rows) too",
             ("tests/test_positions_and_deactivation.py",)),
    # --- counts in low-precision dtypes (bfloat16 holds the integers up to 256, float16 up to 2048) ---
    Mutation("zero-counts-summed-in-dtype", REC,
             "torch.sum(self.zero_codes, dim=-1, dtype=torch.float32, out=self.zero_counts_at[t])",
             "self.zero_counts_at[t].copy_(self.zero_codes.sum(-1))",
             "eq_zero / le_zero counts are summed in the activations' dtype (bfloat16 rounds counts past 256)",
             ("tests/test_dtypes.py::test_zero_counts_past_the_dtype_s_integers",
              "tests/test_dtypes.py::test_trained_models_equal_hooks_in_the_same_dtype")),
    Mutation("index-counts-in-dtype", REC,
             "self.active_counts = torch.zeros((n, 1, width), dtype=torch.float64, device=self.device)",
             "self.active_counts = torch.zeros((n, 1, width), dtype=example.dtype, device=self.device)",
             "a generate call's index counts are kept in the activations' dtype (a bfloat16 count stops at 256)",
             ("tests/test_dtypes.py::test_index_counts_past_the_dtype_s_integers",)),
    Mutation("positions-counts-in-dtype", REC, "counts = (activation > threshold).sum((0, 1))",
             "counts = (activation > threshold).to(activation.dtype).sum((0, 1))",
             "positions='all' sums each call's positives in the activations' dtype (float16 rounds past 2048)",
             ("tests/test_dtypes.py::test_index_counts_past_the_dtype_s_integers",)),
    Mutation("qwen2-site-after-up-proj", "modeling/modeling_qwen2.py",
             "            gate = self.record_activation(gate)  # deactivated neurons come back as 0\n"
             "        down_proj = self.down_proj(gate * self.up_proj(x))\n",
             "            gate = self.record_activation(gate * self.up_proj(x)) / self.up_proj(x)\n"
             "        down_proj = self.down_proj(gate * self.up_proj(x))\n",
             "Qwen2's patch records act_fn(gate_proj(x)) * up_proj(x) instead of the gate alone",
             ("tests/test_exact_zeros.py",)),
    # --- writing and reading the files ---
    Mutation("ratio-pair-swapped", "pim/activation_files.py",
             "    shares = np.asarray(zero_counts, dtype=np.int64) / width\n",
             "    shares = np.asarray(zero_counts, dtype=np.int64)[..., ::-1] / width\n",
             "the project's ratio writer writes [le_zero, eq_zero] instead of [eq_zero, le_zero]",
             ("tests/test_recorder.py::test_files_equal_hook_reference", "tests/test_analysis_stats.py")),
    Mutation("resume-no-truncation", "pim/runs/writer.py", "                f.truncate(size)\n", "                pass\n",
             "a resumed run keeps what a killed batch appended after its last commit",
             ("tests/test_promises.py::test_a_resumed_writer_cuts_the_files_back_to_the_committed_bytes",
              "tests/test_infer.py::test_resume_drops_a_half_written_batch")),
    Mutation("merge-index-not-summed", "pim/runs/merge.py",
             "        total_counts = counts if total_counts is None else total_counts + counts\n",
             "        total_counts = counts\n",
             "merging shards keeps the last shard's index counts instead of summing them",
             ("tests/test_merge.py", "tests/test_scale.py::test_separate_shard_jobs_merge_to_the_files_of_one")),
    Mutation("merge-shards-reversed", "pim/runs/merge.py",
             "                for paths in parts:\n                    with open(paths[kind], \"rb\") as part:",
             "                for paths in parts[::-1]:\n                    with open(paths[kind], \"rb\") as part:",
             "merging shards concatenates the result and ratio files in reverse shard order",
             ("tests/test_merge.py", "tests/test_scale.py::test_separate_shard_jobs_merge_to_the_files_of_one")),
    Mutation("qwen1-w1-w2-swapped", "pim/models/qwen1.py",
             '    "mlp.w2.weight": "mlp.gate_proj.weight",  # w2 goes through SiLU: the gate\n'
             '    "mlp.w1.weight": "mlp.up_proj.weight",\n',
             '    "mlp.w2.weight": "mlp.up_proj.weight",  # w2 goes through SiLU: the gate\n'
             '    "mlp.w1.weight": "mlp.gate_proj.weight",\n',
             "the Qwen v1 converter maps w1 (not w2, the one through SiLU) to gate_proj",
             ("tests/test_qwen1.py::test_logits_equal_v1_reference",
              "tests/test_qwen1.py::test_recorded_files_equal_v1_reference")),
    Mutation("qwen1-shards-unchecked", "pim/models/qwen1.py", "    check_shards(src, weight_map)  # before anything is written\n",
             "", "the Qwen v1 converter trusts the index: a tensor that its shard lacks is left out of the model",
             ("tests/test_qwen1.py::test_a_tensor_the_index_names_but_its_shard_lacks_is_refused",)),
    # --- names and settings of runs ---
    Mutation("names-kind-only-inside", "pim/runs/names.py", 'part for part in name.split("-") if part.lower()',
             'part for part in name.split("-")[1:-1] if part.lower()',
             "a FILE or MODEL that starts or ends with a kind (x-ratio, ratio-m) passes, and its files can collide",
             ("tests/test_runs.py",)),
    Mutation("weights-cache-ignores-mtime", "pim/models/weights.py",
             '[e["size"], e["mtime_ns"]] == [stats[name].st_size, stats[name].st_mtime_ns]',
             'e["size"] == stats[name].st_size',
             "the weights' cached sha256 is reused while the size is unchanged: rebuilt weights keep the old hash",
             ("tests/test_weights_identity.py",)),
    # --- the analyses' numbers ---
    Mutation("mean-of-block-means", "pim/stats/neuron_stats.py",
             "    return Summary(layer_means(ratios), len(ratios))\n",
             "    from pim import activation_files\n"
             "    per_block = max(1, activation_files._BLOCK_VALUES // (2 * ratios.shape[1]))\n"
             "    means = [layer_means(ratios[i:i + per_block]) for i in range(0, len(ratios), per_block)]\n"
             "    return Summary({k: np.mean([m[k] for m in means], axis=0) for k in means[0]}, len(ratios))\n",
             "a ratio file's summary is the mean of the means of its read blocks (unequal weights)",
             ("tests/test_analysis_blocks.py", "tests/test_analysis.py")),
    Mutation("bootstrap-unpaired", "pim/stats/neuron_stats.py",
             "deltas.append(b_sum[pick].sum(1) / b_n[pick].sum(1) - a_sum[pick].sum(1) / a_n[pick].sum(1))",
             "deltas.append(b_sum[pick[::-1]].sum(1) / b_n[pick[::-1]].sum(1) - a_sum[pick].sum(1) / a_n[pick].sum(1))",
             "the comparison's interval of Δ suppressed draws other prompts for the two runs (not paired)",
             ("tests/test_paired_bootstrap.py",)),
    Mutation("lt-zero-sign", "pim/stats/neuron_stats.py", '"lt_zero": le - eq,', '"lt_zero": eq - le,',
             "lt_zero is eq_zero - le_zero (negative) instead of le_zero - eq_zero",
             ("tests/test_analysis_stats.py", "tests/test_analysis_blocks.py")),
    Mutation("layer-mean-over-steps-of-layers", "pim/stats/neuron_stats.py",
             "    eq = ratios[:, :, 0].mean(axis=0)\n", "    eq = ratios[:, :, 0].mean(axis=1).mean() + 0 * ratios[0, :, 0]\n",
             "per-layer eq_zero means are replaced by the all-layer mean (layers averaged away)",
             ("tests/test_analysis_blocks.py", "tests/test_analysis.py")),
    Mutation("peak-ties-reversed", "pim/stats/neuron_stats.py",
             "key = flat.astype(np.int64) * n + np.arange(n - 1, -1, -1)",
             "key = flat.astype(np.int64) * n + np.arange(n)",
             "peak analysis breaks ties by the higher layer and neuron first",
             ("tests/test_analysis_blocks.py", "tests/test_analysis_stats.py")),
    Mutation("top-count-rounds-up", "pim/stats/neuron_stats.py", "return int(total * proportion + 1e-9)",
             "return int(-(-total * proportion // 1))",
             "the top p of N neurons keeps ceil(N * p) instead of floor(N * p) (the paper's int())",
             ("tests/test_analysis_blocks.py", "tests/test_analysis_stats.py")),
    Mutation("concentration-of-all-neurons", "pim/stats/neuron_stats.py",
             "    return float(flat[top_ids(flat[None], proportion)].sum() / total)",
             "    return float(flat[top_ids(flat[None], proportion)].sum() / flat.size)",
             "concentration divides by the number of neurons instead of the sum of all counts",
             ("tests/test_analysis_blocks.py", "tests/test_analysis_stats.py")),
    Mutation("jaccard-over-smaller", "pim/stats/neuron_stats.py",
             "    union = np.union1d(ids_a, ids_b).size\n",
             "    union = min(ids_a.size, ids_b.size)\n",
             "top-neuron overlap divides by the smaller set instead of the union",
             ("tests/test_analysis_blocks.py", "tests/test_analysis_stats.py")),
    Mutation("heatmap-bins-off-by-one", "pim/stats/neuron_stats.py",
             "    size = -(-width // max(1, int(max_bins)))  # ceil: the largest bin\n",
             "    size = width // max(1, int(max_bins)) + 1  # ceil: the largest bin\n",
             "heatmap bins one neuron too wide when the width divides evenly (one bin fewer)",
             ("tests/test_analysis_blocks.py", "tests/test_analysis_stats.py", "tests/test_analysis.py")),
    # --- the SentencePiece tokenizer built from a GGUF (pim/models/gguf_tokenizer.py) ---
    Mutation("spm-merges-by-id", "pim/models/gguf_tokenizer.py", "ranked.append((-scores[piece_id], piece_id, -cut, left, right))",
             "ranked.append((piece_id, 0, -cut, left, right))",
             "BPE merges ranked by piece id instead of score (Gemma's ids happen to follow the scores)",
             ("tests/test_gguf_tokenizer.py",)),
    Mutation("spm-merges-ascending", "pim/models/gguf_tokenizer.py", "ranked.append((-scores[piece_id], piece_id,",
             "ranked.append((scores[piece_id], piece_id,", "the lowest-scoring merge first",
             ("tests/test_gguf_tokenizer.py",)),
    Mutation("spm-no-bos", "pim/models/gguf_tokenizer.py", "add_bos_token=fields.add_bos,", "add_bos_token=False,",
             "BOS dropped although the GGUF asks for it", ("tests/test_gguf_tokenizer.py",)),
    # --- GGUF conversion (pim/models/gguf.py, weights.py, staging.py; issue 25) ---
    Mutation("gguf-source-by-size-mtime", "pim/models/weights.py",
             "st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]", "st.st_size, st.st_mtime_ns]",
             "a GGUF's cached sha256 is reused while name, size and mtime match: another file with a forged mtime "
             "is taken for the converted one",
             ("tests/test_trust_models.py::test_2_a_different_gguf_of_the_same_name_and_size_is_never_taken_for_the_converted_one",)),
    Mutation("gguf-extra-blocks-kept", "pim/models/gguf.py",
             "left_out = [t.name for t in reader.tensors if t.name not in taken and t.name not in NOT_MODEL_WEIGHTS]",
             "left_out = []", "tensors of blocks beyond block_count are silently left out of the conversion",
             ("tests/test_trust_models.py::test_5_tensors_beyond_block_count_are_refused",)),
    Mutation("gguf-nan-converted", "pim/models/gguf.py",
             "if not bool(torch.isfinite(t).all())]", "if False]",
             "a GGUF whose tensors hold NaN or inf is converted",
             ("tests/test_trust_models.py::test_6_non_finite_weights_are_refused_naming_the_tensors",)),
    Mutation("leftovers-of-live-processes-removed", "pim/models/staging.py",
             'if not match or process_alive(int(match["pid"])):', "if not match:",
             "the next start removes the temporaries of conversions and downloads that are still running",
             ("tests/test_trust_models.py::test_leftovers_of_killed_conversions_and_downloads_are_removed_on_the_next_start",)),
    # --- corpus runs at scale (pim/runs/corpus_input.py, pim/runs/corpus.py, pim/runs/corpus_files.py) ---
    Mutation("cut-one-late", "pim/runs/corpus_input.py", "yield n, row[:max_length], len(row) > max_length",
             "yield n, row[:max_length + 1], len(row) > max_length + 1",
             "corpus texts are cut to MAX_LENGTH + 1 tokens: more tokens counted, the budget reached a text early",
             ("tests/test_corpus_scale.py::test_max_tokens_stops_at_the_same_line_whatever_the_batches",)),
    Mutation("window-skips-last-text", "pim/runs/corpus_input.py", "while held is not None and held[0] < end:",
             "while held is not None and held[0] < end - 1:",
             "the last line of every window is dropped (with the next window's start it is never counted)",
             ("tests/test_corpus_scale.py::test_sorted_unsorted_and_batch_sizes_count_what_the_reference_counts",)),
    Mutation("resume-forgets-window", "pim/runs/corpus.py",
             "todo = [row for row in window.rows if row[0] not in writer.window_done]", "todo = list(window.rows)",
             "a resumed run counts again the texts of its window that were committed before it was killed",
             ("tests/test_corpus_scale.py::test_a_killed_shard_resumes_exactly",)),
    Mutation("oom-keeps-partial-counts", "pim/runs/corpus.py",
             "            self.recorder._abort()  # forget the partial counts of the failed call\n", "",
             "after an out-of-memory error the failed call's partial counts are added to the next batch",
             ("tests/test_corpus_scale.py::test_out_of_memory_halves_the_batches_and_one_text_is_a_one_line_error",)),
    Mutation("merge-ignores-split", "pim/runs/shards.py", "    if len(counts) > 1:\n        raise RunRefused(f\"shards of different splits",
             "    if False:\n        raise RunRefused(f\"shards of different splits",
             "shards of two splits (0/3, 1/2, 2/3) are merged: lines counted twice or not at all",
             ("tests/test_corpus_scale.py::test_merge_refuses_missing_overlapping_and_foreign_shards",)),
    Mutation("overwrite-swaps-at-start", "pim/runs/corpus_files.py", "        if self.overwrite:\n            self.paths = {k: self.staging",
             "        if self.overwrite:\n            [p.unlink(missing_ok=True) for p in self.final.values()]\n            self.paths = {k: self.staging",
             "--overwrite deletes the finished run before the new one has counted anything",
             ("tests/test_corpus_scale.py::test_overwrite_keeps_the_old_run_until_the_new_one_is_finished",)),
    Mutation("finished-refused-after-load", "pim/runs/generation.py",
             "    refuse_finished(results_dir, args.file, name, args.overwrite)\n", "",
             "a finished run is refused only after the model is loaded (minutes for a large model)",
             ("tests/test_reliability.py::test_a_finished_generation_run_is_refused_before_the_model_is_loaded",)),
    Mutation("progress-without-checksum", "pim/runs/writer.py", "            if crcs is not None and crc != crcs[kind]:",
             "            if False:", "a result or ratio file edited in place (same length) is taken on resume",
             ("tests/test_reliability.py::test_resume_refuses_files_that_do_not_fit",)),
    # --- issue 25, "Trust, round three" (tests/test_trust_round3.py) ---
    Mutation("sort-window-not-a-setting", "pim/runs/corpus.py",
             "\"sort_window\": args.sort_window}", "\"sort_window\": None}",
             "a corpus run resumes with another --sort-window (texts of the window in progress counted twice)",
             ("tests/test_trust_round3.py::test_1_a_corpus_run_resumed_with_another_sort_window_is_refused_and_"
              "resumes_exactly_with_its_own",)),
    Mutation("languages-twice", "pim/cli.py", "    if twice is not None:\n", "    if False:\n",
             "LANGS='deu deu eng' counts deu twice in LAPE's selection",
             ("tests/test_trust_round3.py::test_3_a_language_given_twice_is_refused_by_lape_and_perplexity",)),
    Mutation("makefile-unquoted", "Makefile", "q = '$(subst ','\\'',$(value $(1)))'", "q = '$(value $(1))'",
             "the Makefile quotes a value in single quotes without escaping its own single quotes",
             ("tests/test_trust_round3.py::test_4_make_passes_every_variable_to_the_scripts_intact_and_runs_nothing_else",)),
    Mutation("ratio-range-unchecked", "pim/activation_files.py", "    if not (block.min() >= 0 and block.max() <= 1):",
             "    if False:", "ratio shares above 1, below 0 or NaN are read as numbers",
             ("tests/test_trust_round3.py::test_7_ratio_shares_outside_0_1_or_not_finite_are_refused_with_file_and_line",)),
    Mutation("negative-counts-taken", "pim/activation_files.py", "        if counts.size and counts.min() < 0:",
             "        if False:", "an index file's negative counts are read and fed to LAPE",
             ("tests/test_trust_round3.py::test_7_index_counts_negative_or_not_finite_are_refused_with_file_and_line_"
              "and_lape_says_so",)),
    Mutation("predict-null-scored", "pim/eval/evaluation.py",
             "        if not isinstance(predict, str):  # null would be scored as the text \"None\"",
             "        predict = str(predict)\n        if False:",
             "\"predict\": null in LLaMA-Factory predictions is scored as the text \"None\"",
             ("tests/test_trust_round3.py::test_8_a_null_or_non_text_prediction_is_refused_with_file_and_line",)),
    Mutation("min-tokens-unchecked", "analysis/language_neurons.py", "        if t < min_tokens:", "        if False:",
             "LAPE takes a language whose corpus run counted 5 tokens (it gets most of the neurons)",
             ("tests/test_trust_round3.py::test_9_lape_refuses_a_language_with_fewer_tokens_than_the_minimum",)),
    Mutation("neuron-entry-unchecked", "pim/models/deactivation.py", "        problem = _pairs_problem(pairs)\n",
             "        problem = None\n", "a neuron file's \"deu\": null gives a traceback",
             ("tests/test_trust_round3.py::test_a_neuron_file_whose_language_is_not_a_list_of_pairs_is_one_line",)),
    Mutation("damaged-corpus-manifest-restarts", "pim/runs/writer.py",
             "    if manifest is None or not isinstance(manifest.get(\"settings\"), dict):",
             "    if False:", "a damaged corpus (or examples) manifest restarts the run from 0, deleting the progress",
             ("tests/test_trust_round3.py::test_a_damaged_corpus_manifest_is_refused_and_the_progress_kept",
              "tests/test_coverage_run_files.py::test_a_damaged_manifest_beside_committed_progress_is_refused_and_kept")),
    Mutation("stale-temps-kept", "pim/activation_files.py", "            if stale and tmp.is_file():",
             "            if False:", "a killed run's temporaries stay when it starts again",
             ("tests/test_trust_round3.py::test_temporaries_left_by_a_kill_are_removed_when_the_run_or_merge_starts_"
              "again",)),
    Mutation("launch-refuses-finished-shard", "pim/runs/engine.py",
             "    print(f\"note: {path}: this shard is finished, kept as it is\", file=sys.stderr)\n    return True",
             "    return False", "a launch started again after one rank finished refuses that rank's shard",
             ("tests/test_trust_round3.py::test_a_two_process_corpus_launch_resumes_after_one_rank_finished",)),
    Mutation("cr-lines-not-counted", "pim/activation_files.py",
             "    return raw.count(b\"\\n\") + raw.count(b\"\\r\") - raw.count(b\"\\r\\n\")",
             "    return raw.count(b\"\\n\")", "bad UTF-8 in a file of \\r line ends is reported at line 1",
             ("tests/test_trust_round3.py::test_bad_utf8_is_reported_at_its_line_whatever_the_line_ends",)),
    # --- the notebook API (pim/api.py) and the steps per prompt it maps rows with ---
    Mutation("api-equal-steps-per-prompt", "pim/api.py", "prompt = np.repeat(np.arange(len(steps)), steps)",
             "prompt = np.arange(rows) // max(steps)",
             "run.ratios maps rows to prompts as if every prompt had the most steps",
             ("tests/test_api.py::test_ratios_map_rows_to_prompts_and_steps",)),
    Mutation("api-unchecked", "pim/api.py", "    note = check_run(files, index=index)\n", "    note = None\n",
             "pim.open_run returns a run whose files disagree with its manifest",
             ("tests/test_api.py::test_a_run_that_disagrees_with_its_manifest_is_refused",)),
    Mutation("prompt-steps-unchecked", "pim/runs/checks.py", "    if counted is not None and sum(steps) != counted:",
             "    if False:", "a manifest whose steps per prompt do not add up to its counted steps is taken",
             ("tests/test_api.py::test_a_run_that_disagrees_with_its_manifest_is_refused",)),
    Mutation("resume-forgets-prompt-steps", "pim/runs/writer.py",
             "prompt_steps = progress[\"prompt_steps\"].tolist() if \"prompt_steps\" in progress.files else None",
             "prompt_steps = None", "a resumed run loses the steps of each prompt (its rows no longer map to prompts)",
             ("tests/test_api.py::test_steps_per_prompt_survive_a_resume_with_pending_prompts",)),
    Mutation("perplexity-ratio-inverted", "pim/stats/perplexity_table.py",
             "else table.off[d][e] / table.base[e] for e in table.languages]",
             "else table.base[e] / table.off[d][e] for e in table.languages]",
             "the perplexity figure shows as is / off: switching neurons off looks like it lowers the perplexity",
             ("tests/test_figures.py::test_the_perplexity_figure_annotates_off_over_as_is",)),
    Mutation("suppressed-figure-not-percent", "pim/stats/comparison.py", "s.means[\"le_zero\"] * 100, color=colour",
             "s.means[\"le_zero\"], color=colour", "the comparison's suppressed share is drawn as a share under a "
             "percent axis", ("tests/test_figures.py::test_the_comparison_figures_show_percent_and_counted_steps",)),
    # --- the report (pim/report/, make report) ---
    Mutation("report-probabilities-shifted", "pim/report/neurons.py", "    for lang, file in zip(langs, files):",
             "    for lang, file in zip(langs, files[1:] + files[:1]):",
             "a neuron's bars show each language the next language's activation probability",
             ("tests/test_report.py::test_the_numbers_on_the_page_against_numbers_by_hand",)),
    Mutation("report-perplexity-transposed", "pim/stats/perplexity_table.py",
             'f"{table.off[d][e]:.4f} ({times(r)})"', 'f"{table.off[e][d]:.4f} ({times(r)})"',
             "the perplexity matrix shows rows as columns (deactivated and evaluated swapped)",
             ("tests/test_report.py::test_the_numbers_on_the_page_against_numbers_by_hand",)),
    Mutation("report-comparison-unordered", "pim/report/build.py",
             "key=lambda r: (r.model, condition_order(r)))", "key=lambda r: (r.model, r.file))",
             "the comparison's reference is the first file by name (PiM before direct), not direct",
             ("tests/test_report.py::test_the_numbers_on_the_page_against_numbers_by_hand",)),
    Mutation("report-filter-ignores-layer", "pim/report/html.py", "    if((m=term.match(/^l?(\\\\d+)$/))) return layer===+m[1];",
             "    if((m=term.match(/^l?(\\\\d+)$/))) return true;",
             "the neuron filter box shows every layer when a layer is asked for (needs chromium: skipped without)",
             ("tests/test_report_demo.py::test_the_tiny_demo_report_in_a_headless_browser",)),
    # --- neuron examples (make examples) ---
    Mutation("examples-ties-late-line", "pim/runs/example_topk.py", "for key, descending in ((line, False),",
             "for key, descending in ((line, True),",
             "neuron examples of equal value: the later line first",
             ("tests/test_neuron_examples.py::test_examples_equal_the_hook_reference",)),
    Mutation("examples-batch-ties-late", "pim/runs/example_topk.py", "rows = torch.argsort(lines)  #",
             "rows = torch.argsort(lines, descending=True)  #",
             "a batch's own top k takes the later lines first among equal values (then lost to the merge)",
             ("tests/test_neuron_examples.py::test_any_batching_and_a_resume_give_the_same_examples",)),
    Mutation("examples-pads-counted", "pim/runs/example_topk.py",
             "keys = keys.masked_fill(~mask.reshape(1, -1), torch.iinfo(torch.int64).min)", "",
             "the pads of a left-padded batch are candidates of the neuron examples",
             ("tests/test_neuron_examples.py::test_examples_equal_the_hook_reference",)),
    Mutation("examples-tokens-unchecked", "pim/runs/examples.py", "    if tokens != corpus.tokens:",
             "    if False:", "the examples read other tokens than the corpus run counted, unnoticed",
             ("tests/test_neuron_examples.py::test_refusals",)),
    # --- issue 27: branches that no test took before `make coverage` measured them ---
    Mutation("corpus-last-line-dropped", "pim/runs/corpus_input.py",
             "for line in _decode(pending, path, number, jsonl) if pending else ():", "for line in ():",
             "a corpus file's last line is neither counted nor read when no newline ends it",
             ("tests/test_coverage_inputs.py",)),
    Mutation("bom-stripped-in-every-block", "pim/runs/corpus_input.py", "    if first == 0:\n", "    if True:\n",
             "a U+FEFF that starts a later 1 MiB block of a corpus is dropped as if it were the file's BOM",
             ("tests/test_coverage_inputs.py",)),
    Mutation("jsonl-blank-line-refused", "pim/runs/corpus_input.py", "    if not line.strip():\n        return \"\"\n", "",
             "a blank line of a .jsonl corpus is refused as bad JSON instead of skipped and counted",
             ("tests/test_coverage_inputs.py",)),
    Mutation("scan-ratio-first-block-only", "pim/runs/checks.py", "            if not rows:  # line 1 goes on",
             "            if lists == 0:  # line 1 goes on",
             "a ratio file whose first row is longer than a read block is refused (its layers counted in the first block)",
             ("tests/test_coverage_inputs.py",)),
    Mutation("reference-fetched-per-run", "pim/eval/evaluation.py", "    if key not in _FETCHED:\n", "    if True:\n",
             "sacrebleu's test set is fetched (or the network probed) again for every run of the test set",
             ("tests/test_coverage_scoring.py",)),
    Mutation("gguf-special-tokens-ignored", "pim/models/gguf.py",
             "        setattr(tokenizer, names[key], tokenizer.convert_ids_to_tokens(int(token_id)))\n", "        pass\n",
             "a converted tokenizer keeps transformers' guess of BOS, EOS, UNK and PAD, not the GGUF's",
             ("tests/test_coverage_gguf.py",)),
    Mutation("overwrite-move-not-resumable", "pim/runs/writer.py",
             '        if kind == "manifest" or staged[kind].exists() or not final[kind].exists():\n',
             "        if True:\n", "an --overwrite run killed between moving its data file and its manifest cannot be "
             "completed by the same command (FileNotFoundError)",
             ("tests/test_coverage_run_files.py::test_an_overwrite_run_killed_between_its_renames_is_completed_by_the_next_one",)),
]


def installed_copy(relative):
    """The installed transformers file that a modeling/ file is a drop-in copy of."""
    name = Path(relative).name
    code = ("import transformers, pathlib; print(pathlib.Path(transformers.__file__).parent)")
    package = Path(subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, check=True).stdout.strip())
    if name == "activation_recorder.py":
        return package / name
    model = re.fullmatch(r"modeling_(\w+)\.py", name).group(1)
    return package / "models" / model / name


def check(mutations):
    """Every old text occurs exactly once in its file; else a SystemExit naming the mutation."""
    problems = []
    for m in mutations:
        path = ROOT / m.file
        if not path.is_file():
            problems.append(f"{m.name}: {m.file} does not exist")
            continue
        found = path.read_text(encoding="utf-8").count(m.old)
        if found != 1:
            problems.append(f"{m.name}: the old text occurs {found} times in {m.file} (the code moved?):\n"
                            + "".join(f"    | {line}\n" for line in m.old.splitlines()))
        for test in m.tests:
            if not (ROOT / test.split("::")[0]).is_file():
                problems.append(f"{m.name}: no test file {test.split('::')[0]}")
        if m.file.startswith("modeling/"):
            target = installed_copy(m.file)
            if not target.is_file() or target.read_text(encoding="utf-8") != path.read_text(encoding="utf-8"):
                problems.append(f"{m.name}: {target} is not the installed copy of {m.file} (run `make patch`)")
    if problems:
        raise SystemExit("plant_bugs.py: error:\n" + "\n".join(problems))


def run_tests(tests, timeout):
    """(first failing test id, or MISSED, or an ERROR line; seconds)."""
    start = time.monotonic()
    try:
        res = subprocess.run([PYTHON, *PYTEST, *tests], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, **ENV})
    except subprocess.TimeoutExpired:
        return f"ERROR: timed out after {timeout} s", time.monotonic() - start
    seconds = time.monotonic() - start
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", res.stdout, re.M)
    if failed:
        return failed[0], seconds
    if res.returncode == 0:
        return "MISSED", seconds
    return f"ERROR: pytest exit status {res.returncode}: {(res.stdout + res.stderr).strip()[-300:]}", seconds


class Planted:
    """The mutation applied to its file (and the installed copy) inside the with-block, restored after."""

    def __init__(self, mutation):
        self.m = mutation
        self.saved = []  # (path, bytes, (atime_ns, mtime_ns))

    def _write(self, path, text):
        stat = path.stat()
        self.saved.append((path, path.read_bytes(), (stat.st_atime_ns, stat.st_mtime_ns)))
        path.write_text(text, encoding="utf-8")

    def __enter__(self):
        source = ROOT / self.m.file
        text = source.read_text(encoding="utf-8").replace(self.m.old, self.m.new, 1)
        try:
            self._write(source, text)
            if self.m.file.startswith("modeling/"):
                self._write(installed_copy(self.m.file), text)
        except BaseException:
            self.restore()
            raise
        return self

    def restore(self):
        while self.saved:
            path, data, times = self.saved.pop()
            path.write_bytes(data)
            os.utime(path, ns=times)  # the old .pyc stays valid

    def __exit__(self, *exc):
        self.restore()
        return False


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", metavar="NAME", help="only these mutations (see --list)")
    p.add_argument("--list", action="store_true", help="list the mutations and exit")
    p.add_argument("--check", action="store_true", help="only check that every old text occurs once, and exit")
    p.add_argument("--baseline", action="store_true", help="first run every listed test without a mutation")
    p.add_argument("--tests", nargs="+", metavar="TEST",
                   help="run these tests (pytest ids) instead of each mutation's own: does a second test catch it too?")
    p.add_argument("--timeout", type=int, default=TIMEOUT, help=f"seconds per mutation (default {TIMEOUT})")
    args = p.parse_args(argv)
    mutations = MUTATIONS
    if args.only:
        unknown = set(args.only) - {m.name for m in MUTATIONS}
        if unknown:
            p.error(f"no mutation {', '.join(sorted(unknown))}; --list shows them")
        mutations = [m for m in MUTATIONS if m.name in args.only]
    if args.tests:
        mutations = [Mutation(m.name, m.file, m.old, m.new, m.description, tuple(args.tests)) for m in mutations]
    if args.list:
        for m in mutations:
            print(f"{m.name:34} {m.file:32} {m.description}")
        return 0
    check(mutations)
    print(f"{len(mutations)} mutations: every old text found once", flush=True)
    if args.check:
        return 0
    if args.baseline:
        tests = list(dict.fromkeys(t for m in mutations for t in m.tests))
        outcome, seconds = run_tests(tests, args.timeout * 2)
        print(f"baseline ({seconds:.0f} s): {'all pass' if outcome == 'MISSED' else outcome}", flush=True)
        if outcome != "MISSED":
            return 1
    rows = []
    for m in mutations:
        with Planted(m):
            outcome, seconds = run_tests(m.tests, args.timeout)
        rows.append((m.name, m.file, outcome, f"{seconds:.0f}"))
        print(f"{m.name}: {outcome} ({seconds:.0f} s)", flush=True)
    widths = [max(len(r[i]) for r in rows + [("mutation", "file", "caught by", "s")]) for i in range(4)]
    print()
    for row in [("mutation", "file", "caught by", "s")] + rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    missed = [r[0] for r in rows if not r[2].startswith("tests/")]
    print(f"\n{len(rows) - len(missed)} of {len(rows)} caught" + (f"; not caught: {', '.join(missed)}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
