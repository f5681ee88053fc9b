"""Instruction finetuning (the book's chapter 7) with the pretraining Trainer, and offline scoring.

``finetune_instruct(out, init, data, cfg)``: split the entries (seeded 85/5/10), answer the test split with
the untuned model, finetune (validation loss, checkpoints, resume, loss.png as in pretraining), answer the
test split again, and write ``test_responses.json`` (each test entry with ``response_before`` and
``response``) and ``scores.json`` (exact match, ROUGE-L F1 and mean response length, before and after; an
LLM judge's 0-100 scores with ``judge_url``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

from .. import random as mrandom
from ..errors import MiniGPTError
from ..io import atomic_write_json, read_json
from ..settings import TEMPLATES, InstructConfig, TrainConfig  # noqa: F401  (InstructConfig re-exported)
from .loop import Trainer, check_run_folder, load_checkpoint
from ..data.instruct import format_prompt
from ..model import generate
from ..progress import progress_bar
from ..data import DataLoader
from ..data.instruct import (CHAT_FORMATS, InstructionDataset, check_instruction_splits, read_instructions,
                             split_instructions)
from ..loading import load_model_and_tokenizer
from .classify import _save_final
from .finetune import apply_train_mode, check_single_process, fresh_start, saved_config
from .loop import evaluate
from ..model.folders import resolve_model_dir

ENDOFTEXT = "<|endoftext|>"


# --- scores ---------------------------------------------------------------------------------------------
def _words(text: str) -> list[str]:
    return text.lower().split()


def lcs_length(a: list, b: list) -> int:
    """Length of the longest common subsequence (dynamic programming over one row)."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l_f1(candidate: str, reference: str) -> float:
    """ROUGE-L F1 over lower-cased whitespace words: LCS precision P = lcs / |cand|, recall R = lcs / |ref|,
    F1 = 2PR / (P + R). Example: "the cat sat" vs "the cat sat down" -> P 1, R 0.75, F1 6/7."""
    c, r = _words(candidate), _words(reference)
    lcs = lcs_length(c, r)
    if lcs == 0:
        return 0.0
    p, rec = lcs / len(c), lcs / len(r)
    return 2 * p * rec / (p + rec)


def exact_match(candidate: str, reference: str) -> bool:
    return " ".join(_words(candidate)) == " ".join(_words(reference))


def score_responses(responses: list[str], references: list[str]) -> dict:
    n = len(responses)
    return {"n": n,
            "exact_match": sum(exact_match(a, b) for a, b in zip(responses, references)) / n if n else 0.0,
            "rouge_l_f1": float(np.mean([rouge_l_f1(a, b) for a, b in zip(responses, references)])) if n else 0.0,
            "mean_words": float(np.mean([len(_words(a)) for a in responses])) if n else 0.0,
            "reference_mean_words": float(np.mean([len(_words(b)) for b in references])) if n else 0.0}


# --- answering ------------------------------------------------------------------------------------------
def respond(model, tok, entry: dict, template: str, max_new_tokens: int) -> str:
    """Greedy response to one entry, stopped at end-of-text (a chat format's: its end-of-turn token)."""
    if template in CHAT_FORMATS:  # a Llama 3 / Qwen chat model: its header tokens are special tokens
        eos = tok.special_tokens.get(CHAT_FORMATS[template][2])
        ids = tok.encode(format_prompt(entry, template), allowed_special="all")
    else:
        eos = tok.special_tokens.get(ENDOFTEXT)
        ids = tok.encode_ordinary(format_prompt(entry, template))
    ctx = model.config.context_length
    ids = ids[-ctx:]
    was = model.training
    model.eval()
    try:
        out = generate(model, np.array([ids]), max_new_tokens, temperature=0.0, eos_id=eos)
    finally:
        model.train(was)
    new = [int(t) for t in np.asarray(out).reshape(-1)[len(ids):]]
    if eos is not None and eos in new:
        new = new[:new.index(eos)]
    return tok.decode(new).strip()


def answer_all(model, tok, entries, template, max_new_tokens, progress=False, desc="answering",
               file=None) -> list[str]:
    """Greedy answers to ``entries``. ``progress``: report on ``file`` (default standard error) as every
    long step does (:func:`minigpt.progress.progress_bar`): a bar on a terminal, plain lines in a log."""
    answers = []
    with progress_bar(len(entries), desc=desc, unit="entry", file=file, disable=not progress) as bar:
        for e in entries:
            answers.append(respond(model, tok, e, template, max_new_tokens))
            bar.update(1)
    return answers


# --- LLM judge (Ollama-compatible /api/chat) --------------------------------------------------------------
def check_judge_url(url: str) -> None:
    """Refuse a judge URL that is not ``http(s)://host[:port][/path]`` before any work."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as e:
        raise MiniGPTError(f"--judge-url {url!r}: not a valid URL ({e})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MiniGPTError(f"--judge-url {url!r}: expected an http:// or https:// URL such as "
                           "http://localhost:11434")


def judge_scores(url: str, entries, responses, template: str = "alpaca", model: str = "llama3",
                 timeout: float = 60.0) -> list[int | None]:
    """0-100 scores from an Ollama-compatible server (``POST {url}/api/chat``); None where the reply holds
    no number. A clear MiniGPTError when nothing listens at ``url``."""
    scores = []
    for e, resp in zip(entries, responses):
        prompt = (f"Here is a task: `{format_prompt(e, template)}`; its reference answer: `{e['output']}`. "
                  f"Rate this answer to the task: `{resp}`, from 0 (useless) to 100 (as good as the reference). "
                  "Reply with the number only.")
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}], "stream": False,
                           "options": {"seed": 123, "temperature": 0, "num_ctx": 2048}}).encode()
        req = urllib.request.Request(url.rstrip("/") + "/api/chat", data=body,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read().decode("utf-8")
        except urllib.error.HTTPError as ex:
            raise MiniGPTError(f"--judge-url {url}: the server answered HTTP {ex.code} ({ex.reason}); is it an "
                               f"Ollama server with the model {model!r} pulled?") from None
        except ValueError as ex:  # urllib: "unknown url type" and other malformed URLs
            raise MiniGPTError(f"--judge-url {url!r}: not a valid URL ({ex})") from None
        except (urllib.error.URLError, OSError) as ex:
            reason = getattr(ex, "reason", ex)
            raise MiniGPTError(f"--judge-url {url}: nothing answers there ({reason}); start Ollama (`ollama serve`) "
                               "or leave out --judge-url") from None
        content = ""
        for line in raw.splitlines():  # one JSON object, or one per line when the server streams
            if line.strip():
                try:
                    content += json.loads(line).get("message", {}).get("content", "")
                except (json.JSONDecodeError, AttributeError):
                    raise MiniGPTError(f"--judge-url {url}: the reply is not Ollama's JSON: {line[:80]!r}") from None
        digits = "".join(ch if ch.isdigit() else " " for ch in content).split()
        scores.append(min(100, int(digits[0])) if digits else None)
    return scores


# --- the run ---------------------------------------------------------------------------------------------
def _fingerprint(entries) -> str:
    return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()[:16]


def finetune_instruct(out_dir, init=None, data=None, cfg: InstructConfig | None = None, resume: bool = False,
                      progress: bool = True, log=print, tokenizer: str | None = None,
                      judge_url: str | None = None, judge_model: str = "llama3") -> dict:
    out_dir = Path(out_dir)
    check_single_process("finetune instruct")
    if not resume:
        data, cfg = fresh_start("instruct", init, data, cfg, InstructConfig)
    if judge_url:
        check_judge_url(judge_url)
    check_run_folder(out_dir, resume)  # nothing of an earlier run is overwritten; --resume needs a checkpoint
    if resume:
        model, opt_state, tok, state = load_checkpoint(out_dir)
        if state.get("task") != "instruct":
            raise MiniGPTError(f"--resume: {out_dir} is not an instruction finetuning run")
        cfg, data, init = saved_config(state, "instruct", InstructConfig, out_dir)
        entries = read_instructions(data)
        if _fingerprint(entries) != state.get("data_fingerprint"):
            raise MiniGPTError(f"--resume: {data} differs from the data this run started with")
    else:
        entries = read_instructions(data)  # the data and its split are checked before the model is loaded
        check_instruction_splits(data, *(len(p) for p in split_instructions(len(entries), seed=cfg.seed)))
        model, tok = load_model_and_tokenizer(init, tokenizer, kind="lm", strict_vocab=True, for_training=True)
    if ENDOFTEXT not in tok.special_tokens:
        raise MiniGPTError("the tokenizer has no <|endoftext|> token to end responses and pad batches with")
    mrandom.manual_seed(cfg.seed)
    tr, va, te = split_instructions(len(entries), seed=cfg.seed)
    parts = {"train": [entries[i] for i in tr], "val": [entries[i] for i in va], "test": [entries[i] for i in te]}
    ctx = model.config.context_length
    max_len = cfg.max_length or ctx
    if max_len > ctx:
        raise MiniGPTError(f"--max-length {max_len} exceeds the model's context length {ctx}")
    pad = tok.special_tokens[ENDOFTEXT]
    ds = {k: InstructionDataset(v, tok, cfg.template, pad, max_len, cfg.mask_prompt) for k, v in parts.items()}
    log(f"data: {data}: {len(entries):,} entries; split train/val/test {len(tr)}/{len(va)}/{len(te)}; template "
        f"{cfg.template}; max length {max_len} (truncated: {ds['train'].truncated} training entries)")
    n_train = apply_train_mode(model, cfg.train, cfg.lora_rank, cfg.lora_alpha)
    log(f"model: {model.num_parameters():,} parameters, {n_train:,} trainable (--train {cfg.train})")

    test = parts["test"][:cfg.eval_limit] if cfg.eval_limit is not None else parts["test"]
    before_path = out_dir / "responses_before.json"
    if resume and before_path.exists():
        before = read_json(before_path, "responses_before.json", expect=list)
        if len(before) != len(test) or not all(isinstance(r, str) for r in before):
            raise MiniGPTError(f"{before_path} is damaged: expected a list of {len(test)} answers (strings); "
                               "delete it to answer the test split again")
    else:
        before = answer_all(model, tok, test, cfg.template, cfg.max_new_tokens, progress, "untuned answers")
        atomic_write_json(before_path, before)

    bs = min(cfg.batch_size, len(ds["train"]))
    train_loader = DataLoader(ds["train"], bs, shuffle=True, seed=cfg.seed, drop_last=True)
    val_loader = DataLoader(ds["val"], min(bs, len(ds["val"])), shuffle=False, drop_last=False)
    per_epoch = len(train_loader)
    steps = max(1, math.ceil(cfg.epochs * per_epoch))
    tcfg = TrainConfig(steps=steps, batch_size=bs, lr=cfg.lr, warmup=cfg.warmup, weight_decay=cfg.weight_decay,
                       eval_every=max(1, per_epoch // 4), eval_batches=len(val_loader), seed=cfg.seed,
                       sample_tokens=0)
    if resume:
        val_before = state.get("val_loss_before")
    else:
        val_before = evaluate(model, val_loader, len(val_loader))
        log(f"validation loss before finetuning: {val_before:.3f}")
    extra = {"task": "instruct", "instruct": dataclasses.asdict(cfg), "data": str(data), "init": str(init),
             "data_fingerprint": _fingerprint(entries), "val_loss_before": val_before}
    trainer = Trainer(model, tok, train_loader, val_loader, tcfg, out_dir, log=log, progress=progress,
                      extra_state=extra)
    if resume:
        trainer.restore(opt_state, state)
        log(f"resuming {out_dir} at step {trainer.step} of {steps}")
    if trainer.step < steps:
        trainer.run()
    after = answer_all(model, tok, test, cfg.template, cfg.max_new_tokens, progress, "finetuned answers")
    refs = [e["output"] for e in test]
    scores = {"before": score_responses(before, refs), "after": score_responses(after, refs)}
    records = [{**e, "response_before": b, "response": a} for e, b, a in zip(test, before, after)]
    val_losses = [h[3] for h in trainer.history if h[3] is not None]
    scores["val_loss_before"] = val_before
    scores["val_loss_after"] = val_losses[-1] if val_losses else None
    scores.update({"trainable_parameters": n_train, "steps": trainer.step, "template": cfg.template})
    # the model and the offline scores are saved first: a judge that fails later loses none of them
    atomic_write_json(out_dir / "test_responses.json", records)
    atomic_write_json(out_dir / "scores.json", scores)
    _save_final(model, tok, out_dir / "model", cfg, init)
    atomic_write_json(out_dir / "model" / "instruct.json", {"template": cfg.template})
    atomic_write_json(out_dir / "instruct.json", {"template": cfg.template})
    if judge_url:
        for key, resp in (("before", before), ("after", after)):
            js = judge_scores(judge_url, test, resp, cfg.template, judge_model)
            valid = [s for s in js if s is not None]
            scores[key]["judge_mean"] = float(np.mean(valid)) if valid else None
            for r, s in zip(records, js):
                r[f"judge_{key}"] = s
        atomic_write_json(out_dir / "test_responses.json", records)
        atomic_write_json(out_dir / "scores.json", scores)
    scores["model_dir"] = str(out_dir / "model")
    return scores


def template_of(folder, default: str = "alpaca") -> str:
    """The prompt template an instruction-finetuned model folder was trained with (instruct.json)."""
    for cand in (Path(folder), resolve_model_dir(folder)):
        f = cand / "instruct.json"
        if f.exists():
            template = read_json(f, "instruct.json", max_bytes=1 << 20, max_depth=4).get("template")
            if template not in TEMPLATES:
                raise MiniGPTError(f"{f} is damaged: 'template' must be one of {', '.join(TEMPLATES)}, got "
                                   f"{str(template)[:40]!r}")
            return template
    return default
