"""trl 1.16's DPO and GRPO losses driven offline, through the trainers' own loss code.

No weights and no network: a tiny random LlamaForCausalLM and a word-level tokenizer built in code make the
trainers constructible (CPU, report_to=[]). Each call then replaces the model's backbone by one that returns the
caller's hidden states, and its LM head weight by the caller's weight, so that ``DPOTrainer.compute_loss`` and
``GRPOTrainer._compute_loss`` run trl's fused LM head (``add_fused_lm_head``), its log-probs and its loss on exactly
the operation's inputs. The reference log-probs are given (DPO: trl's precompute_ref_log_probs path; GRPO:
``ref_per_token_logps``). trl's loss is differentiated by autograd on private leaves, and the result is returned
through a torch.autograd.Function so that the gradients reach the caller's hidden and weight.

Options the operation has and trl lacks are mapped to trl's nearest setting and documented as deviations
(implementations/thirdparty/preference/__init__.py). An option left as None means trl's own default.
"""

from __future__ import annotations

import contextlib
import io
import os
import types
import warnings

import torch

from specs import dpo as dpo_spec
from specs import grpo as grpo_spec

os.environ.setdefault("HF_HUB_OFFLINE", "1")
_VOCAB_TOKENS = 8  # the tokenizer's own vocabulary; the model's is the caller's (weight.shape[0])


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(_VOCAB_TOKENS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0", pad_token="t1", eos_token="t2")


def _tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=_VOCAB_TOKENS, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg)


class _GivenHiddenStates(torch.nn.Module):
    """A backbone that returns the hidden states it is given (the embedding stays for trl's checks)."""

    def __init__(self, embed_tokens):
        super().__init__()
        self.embed_tokens = embed_tokens
        self.hidden: torch.Tensor | None = None

    def get_input_embeddings(self):
        return self.embed_tokens

    def forward(self, *args, **kwargs):
        return types.SimpleNamespace(last_hidden_state=self.hidden, router_logits=None)


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


_TRAINERS: dict = {}


def _dpo_trainer():
    if "dpo" not in _TRAINERS:
        from datasets import Dataset
        from trl import DPOConfig, DPOTrainer

        with _quiet():
            args = DPOConfig(output_dir=os.path.join(os.environ.get("TMPDIR", "/tmp"), "eqspec-trl-dpo"), use_cpu=True,
                             report_to=[], logging_strategy="no", save_strategy="no", per_device_train_batch_size=1)
            data = Dataset.from_dict({"prompt": ["t3 t4"], "chosen": [" t5"], "rejected": [" t6"]})
            trainer = DPOTrainer(model=_tiny_model(), ref_model=_tiny_model(), args=args, train_dataset=data,
                                 processing_class=_tokenizer())
        trainer.model.model = _GivenHiddenStates(trainer.model.model.embed_tokens)
        trainer.precompute_ref_logps = True  # the reference log-probs come with the inputs
        _TRAINERS["dpo"] = trainer
    return _TRAINERS["dpo"]


def _grpo_trainer(temperature: float):
    key = ("grpo", temperature)
    if key not in _TRAINERS:
        from datasets import Dataset
        from trl import GRPOConfig, GRPOTrainer

        with _quiet():
            args = GRPOConfig(output_dir=os.path.join(os.environ.get("TMPDIR", "/tmp"), "eqspec-trl-grpo"),
                              use_cpu=True, report_to=[], logging_strategy="no", save_strategy="no",
                              per_device_train_batch_size=2, num_generations=2, temperature=temperature, beta=0.0,
                              bf16=False)
            data = Dataset.from_dict({"prompt": ["t3 t4"]})
            trainer = GRPOTrainer(model=_tiny_model(), reward_funcs=lambda completions, **kw: [0.0] * len(completions),
                                  args=args, train_dataset=data, processing_class=_tokenizer())
        trainer.model.model = _GivenHiddenStates(trainer.model.model.embed_tokens)
        trainer.model.eval()  # eval mode: no gradient-accumulation scaling of the loss
        _TRAINERS[key] = trainer
    return _TRAINERS[key]


class _ThroughLibrary(torch.autograd.Function):
    """Run ``loss_of(hidden_leaf, weight_leaf)`` (the library's code) and hand its gradients to the caller's tensors."""

    @staticmethod
    def forward(ctx, hidden, weight, loss_of):
        h = hidden.detach().clone().requires_grad_(True)
        w = torch.nn.Parameter(weight.detach().clone())
        with torch.enable_grad():
            loss = loss_of(h, w)
            dh, dw = torch.autograd.grad(loss, (h, w), allow_unused=True)
        ctx.save_for_backward(torch.zeros_like(h) if dh is None else dh, torch.zeros_like(w) if dw is None else dw)
        return loss.detach()

    @staticmethod
    def backward(ctx, grad_output):
        dh, dw = ctx.saved_tensors
        return dh * grad_output, dw * grad_output, None


def _install(trainer, hidden, weight):
    trainer.model.model.hidden = hidden
    trainer.model.lm_head.weight = weight


# trl's loss_type for each of the spec's: trl 1.16 has no conservative DPO (its sigmoid ignores label_smoothing)
_DPO_LOSS_TYPES = {"sigmoid": "sigmoid", "cdpo": "sigmoid", "robust": "robust", "ipo": "ipo", "hinge": "hinge"}


def dpo_loss(hidden, weight, input_ids, completion_mask, ref_chosen_logps, ref_rejected_logps, *, beta: float = 0.1,
             loss_type: str = "sigmoid", label_smoothing: float = 0.0):
    """dpo.fused_linear_dpo_loss through DPOTrainer.compute_loss."""
    dpo_spec.check_loss_options(beta, loss_type, label_smoothing)  # trl validates these only in DPOConfig
    trainer = _dpo_trainer()
    trainer.beta, trainer.label_smoothing = float(beta), float(label_smoothing)
    trainer.loss_types, trainer.loss_weights = [_DPO_LOSS_TYPES[loss_type]], [1.0]
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
              "completion_mask": completion_mask, "ref_chosen_logps": ref_chosen_logps,
              "ref_rejected_logps": ref_rejected_logps}

    def loss_of(h, w):
        _install(trainer, h, w)
        with _quiet():
            return trainer.compute_loss(trainer.model, inputs)

    return _ThroughLibrary.apply(hidden, weight, loss_of)


def grpo_loss(hidden, weight, completion_ids, completion_mask, advantages, old_logps=None, ref_logps=None, *,
              temperature: float = 1.0, beta: float | None = None, epsilon_low: float | None = None,
              epsilon_high: float | None = None, loss_type: str | None = None,
              max_completion_length: int | None = None):
    """grpo.fused_linear_grpo_loss through GRPOTrainer._compute_loss; an option left None takes trl's default. The
    KL penalty is DeepSeekMath's k3 (use_bias_correction_kl=False)."""
    return _grpo(hidden, weight, completion_ids, completion_mask, advantages, old_logps, ref_logps,
                 temperature=temperature, beta=beta, epsilon_low=epsilon_low, epsilon_high=epsilon_high,
                 loss_type=loss_type, max_completion_length=max_completion_length, bias_correction_kl=False)


def grpo_loss_bias_corrected_kl(hidden, weight, completion_ids, completion_mask, advantages, old_logps=None,
                                ref_logps=None, *, temperature: float = 1.0, beta: float | None = None,
                                epsilon_low: float | None = None, epsilon_high: float | None = None,
                                loss_type: str | None = None, max_completion_length: int | None = None):
    """As grpo_loss, with trl 1.16's default KL: k3 times the importance ratio (use_bias_correction_kl=True)."""
    return _grpo(hidden, weight, completion_ids, completion_mask, advantages, old_logps, ref_logps,
                 temperature=temperature, beta=beta, epsilon_low=epsilon_low, epsilon_high=epsilon_high,
                 loss_type=loss_type, max_completion_length=max_completion_length, bias_correction_kl=True)


def _grpo(hidden, weight, completion_ids, completion_mask, advantages, old_logps, ref_logps, *, temperature, beta,
          epsilon_low, epsilon_high, loss_type, max_completion_length, bias_correction_kl):
    from trl import GRPOConfig

    # trl's defaults, read from the config class (building a config would reset accelerate's state)
    default = {name: f.default for name, f in GRPOConfig.__dataclass_fields__.items()}
    trainer = _grpo_trainer(float(temperature))
    eps_lo = default["epsilon"] if epsilon_low is None else epsilon_low
    trainer.beta = default["beta"] if beta is None else float(beta)
    trainer.loss_type = default["loss_type"] if loss_type is None else loss_type
    trainer.epsilon_low = eps_lo
    trainer.epsilon_high = (default["epsilon_high"] or eps_lo) if epsilon_high is None else epsilon_high
    trainer.args.use_bias_correction_kl = bias_correction_kl
    N, T = completion_ids.shape
    trainer.max_completion_length = T if max_completion_length is None else max_completion_length
    if trainer.beta != 0.0 and ref_logps is None:
        grpo_spec.check_grpo_loss_args(torch.empty(N, T), old_logps, ref_logps, advantages, completion_mask, 1.0)
    # one prompt token; hidden[:, t] sits at position t of the completion, which trl's shift assigns to token t
    prompt = torch.zeros(N, 1, dtype=completion_ids.dtype)
    inputs = {"prompt_ids": prompt, "prompt_mask": torch.ones_like(prompt), "completion_ids": completion_ids,
              "completion_mask": completion_mask.to(torch.int64), "advantages": advantages,
              "num_items_in_batch": completion_mask.sum()}
    if old_logps is not None:
        inputs["old_per_token_logps"] = old_logps
    if ref_logps is not None:
        inputs["ref_per_token_logps"] = ref_logps

    def loss_of(h, w):
        _install(trainer, torch.cat([h, torch.zeros_like(h[:, :1])], dim=1), w)  # the last position scores nothing
        with _quiet():
            return trainer._compute_loss(trainer.model, inputs)

    return _ThroughLibrary.apply(hidden, weight, loss_of)


# --- group advantages: GRPOTrainer._generate_and_score_completions with a reward function that returns the caller's
# rewards (the completions the tiny model generates are irrelevant to the advantages)

_SCALE_REWARDS = {"sample": "group", "population": "group", "none": "none"}  # trl has no population std


def _advantage_trainer(group_size: int):
    key = ("advantages", group_size)
    if key not in _TRAINERS:
        from datasets import Dataset
        from trl import GRPOConfig, GRPOTrainer

        state: dict = {}

        def given_rewards(completions, **kwargs):
            return [float(r) for r in state["rewards"]]

        with _quiet():
            args = GRPOConfig(output_dir=os.path.join(os.environ.get("TMPDIR", "/tmp"), "eqspec-trl-grpo"),
                              use_cpu=True, report_to=[], logging_strategy="no", save_strategy="no", bf16=False,
                              per_device_train_batch_size=group_size, num_generations=group_size,
                              max_completion_length=2, beta=0.0)
            trainer = GRPOTrainer(model=_tiny_model(), reward_funcs=given_rewards, args=args,
                                  train_dataset=Dataset.from_dict({"prompt": ["t3 t4"] * group_size}),
                                  processing_class=_tokenizer())
        _TRAINERS[key] = (trainer, state)
    return _TRAINERS[key]


def group_advantages(rewards, group_size: int, *, std: str = "sample", eps: float = 0.0):
    """grpo.group_advantages through GRPOTrainer's reward normalisation (scale_rewards 'group' or 'none'); its
    epsilon is trl's fixed 1e-4 whatever eps asks."""
    # No checks of ours (what trl rejects is what is tested), except the group size: GRPOConfig rejects a bad one
    # too, but a failed construction leaves accelerate's state reset, which breaks every later call
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"num_generations (group_size) must be a positive integer, got {group_size!r}")
    if group_size == 1:  # the spec's groups of one (std 'none' or 'population'); trl raises a ValueError
        raise NotImplementedError("GRPOTrainer needs at least 2 generations per prompt (num_generations >= 2)")
    for attempt in range(2):
        trainer, state = _advantage_trainer(group_size)
        trainer.scale_rewards = _SCALE_REWARDS[std]
        state["rewards"] = rewards.detach().cpu().tolist()
        try:
            with _quiet(), torch.no_grad():
                out = trainer._generate_and_score_completions([{"prompt": "t3 t4"}] * rewards.shape[0])
            break
        except (AttributeError, ValueError) as exc:
            # another trainer's failed construction reset accelerate's shared state: build this one again (its
            # construction sets the state up), once
            if attempt or "ccelerat" not in str(exc):
                raise
            _TRAINERS.pop(("advantages", group_size))
    return out["advantages"].to(device=rewards.device, dtype=rewards.dtype)
