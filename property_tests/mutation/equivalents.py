"""Generated mutants that no test can kill, because they compute what the spec computes on every valid input - or
differ only where a correct implementation may differ too, so that a test that killed them would fail correct code.

Keyed by ``Mutant.key`` (module.function: before -> after), each with the reason. A mutant listed here is left out
of the score; one that a test kills anyway is simply counted killed.
"""

_TIE_BAND = ("greedy_policy's tie band is a convention a few ulps wide (64 eps of max(1, |q|)): q computed by a "
             "correct implementation in another order differs from the spec's by that much, so a test may not tell "
             "one band of a few ulps from another - ties exact to the bit and clear winners are what it checks")
_PI_CAP = ("policy iteration stops when the greedy policy repeats, after at most A^S improvements and in practice a "
           "handful; a cap of 1000 +- 1 is never reached (a cap of 1 is checked explicitly)")

_SQUARE_SIM = ("hard_negative_weights rejects a sim that is not square (B x B: one image and one text per pair), so "
               "sim.shape[0] and sim.shape[1] are the same number wherever either is read")

_BLOCK_SIZE = ("tiled_attention's default block sizes (32) are a tiling, not a value: every block size computes "
               "the same attention, to the rounding the tests allow any correct tiling (the block sizes are "
               "drawn explicitly where the tiling itself is tested)")
_ONE_ELEMENT = ("check_scalar has just rejected a tensor of more than one element: of one element, all() and any() "
                "are the same")
_ONE_DIM_RESHAPE = ("score_sde._t views a (B,) t as (B, 1, ..., 1) against x: for a one-dimensional x that view is t "
                    "itself, so whether the reshape runs for x.dim() == 1 changes nothing")
_SHIFT_FLOOR = ("flow_shift's shift must be positive; its floor 1e-300 (not 0, which divides by 0 in the exponential "
                "form) moved to 2e-300 differs only for shifts in (1e-300, 2e-300], which no schedule uses")
_RHO_FLOOR = ("time_steps' rho must be at least 1e-3; that floor moved to 2e-3 differs only for rho in [1e-3, 2e-3), "
              "where sigma^(1/rho), at least sigma^500, leaves float64 for every sigma outside about [0.24, 4.1] "
              "(measured: it overflows - the spec raises OverflowError at the Table 1 sigmas - or underflows to a "
              "schedule of zeros): no schedule uses such a rho")
_IDDPM_TAIL = ("iddpm_u is a helper, not an operation: a list of M + 2 levels in place of M + 1 only appends u = 0 "
               "after u_M = 0 (the recursion starts from the same u_M), and time_steps reads u_j for j <= M - 1 only")

_MEAN_THEN_NORMALISE = ("zero_shot_classifier normalises the mean of a class's normalised prompt embeddings: the sum "
                        "is the mean times the number of prompts, a positive factor the normalisation removes (to "
                        "the rounding of one division)")
_SQUARE_BLOCK = ("local_block_loss is called on blocks of equal size (every rank holds b images and b texts), so its "
                 "logit block is square and L.shape[0] and L.shape[1] are the same number")

_NO_GRAD_TEMPERATURE = ("itc_loss divides the momentum similarities by tau inside torch.no_grad() (the soft targets "
                        "are a teacher's): there, tau.detach() and tau are the same value and no graph is recorded "
                        "either way")
_SQUARE_LOGITS = ("contrastive_loss (pairwise_loss) has just rejected a logit matrix that is not square (N images x N "
                  "texts): the "
                  "labels arange(N) are the same whichever side N is read from")

_ZIP_TRUNCATES = ("check_itc_args zips the names of the three features checked against image_feat's shape with those "
                  "three tensors: zip stops at the shorter, so names[1:5] pairs the same three names as names[1:4]")

_FIRST_ITERATE_READ_ONLY = ("the iterations only read their first iterate (w_{k+1} = w_k - ... builds a new tensor) "
                            "and torch.stack copies every iterate into the returned one: without the clone of w1 "
                            "nothing writes to the caller's tensor and no output shares its memory")

_SAME_DRAWS = ("the samplers draw i.i.d. uniforms and use each once: drawing more than they use, or serving the "
               "steps in another order (2t - 1 for t = 0..L-1 is a permutation of the odd indices), gives episodes "
               "of the same distribution - a test that told them apart would fail a correct sampler that draws in "
               "another order")
_CDF_ROUNDING = ("the inverse-CDF samplers normalise the cumulative sum so that its last entry is exactly 1; without "
                 "it (or scaled by that entry) the draws differ only when u falls within the row's rounding of 1 "
                 "(1e-9 at most, the tolerance of a stochastic row; 1e-16 for the rows these tests build), or when "
                 "u equals an entry of the CDF exactly (searchsorted left or right): events no sample size can show, "
                 "where torch.multinomial would differ too")
_NEVER_INDEXED = ("first_visits' table of seen pairs needs pair.max() + 1 columns; one more is never read")
_UNVISITED = ("mc_action_values' q is where(num > 0, returns / num.clamp(min=1), 0): where num = 0, returns is 0 too, "
              "so num >= 0 gives 0 / 1 = 0 and clamp(min=0) gives 0 / 0 where the where() discards it (float64, no "
              "gradient)")
_REBOUND = ("generate_episodes rebinds s and a each step (s = s_next) and writes them into its own tables: nothing "
            "writes to the caller's s0 or a0, so the clone changes nothing")

_NEVER_EXACTLY_TOLERANCE = ("a row sum near 1 is a double whose difference from 1 is exact (Sterbenz) and a multiple "
                            "of 2^-53; the double 1e-9 is not one, so worst == STOCHASTIC_ATOL never holds and > and "
                            ">= reject the same rows")
_ONE_ENTRY_CU = ("check_cu_seqlens: a cu_seqlens of one entry [c] must have c = 0 and c = the number of packed tokens, "
                 "which is at least 1 (empty q and k are rejected first), so it is rejected whether len < 2 or len < 1 "
                 "is asked")
_STATE_BROADCASTS = ("online_softmax's running (m, ell) start as -inf and 0; started as scalars (shape[:-0] = ()) they "
                     "broadcast to the row shape at the first block, which always exists (an empty row is rejected)")
_BICUBIC_IDENTITY = ("pos_emb returns the table itself at its own size; without that shortcut (the size compared "
                     "to a 1- or 3-tuple, never equal) it resamples the table to its own size, and bicubic at scale "
                     "1 takes each value at its own centre (taps 0, 1, 0, 0): the same table, in a fresh tensor too")
_DIVIDES_FIRST = ("check_encoder_params asks D % heads before (D // heads) % 4: where heads divides D, D / heads is "
                  "that integer as a float and its remainder by 4 is the same")
_MULTIPLE_OF_FOUR = ("rope_frequencies is called with head dims that check_rope_args has required to be multiples of "
                     "4 (two frequencies per axis): there d / 4 is d // 4 as a float and arange gives the same d / 4 "
                     "frequencies")
_EVEN_BATCH = ("check_fused_args has just rejected an odd batch N ([chosen; rejected]): N / 2 is then N // 2 as a "
               "float, and a shape equals it or not alike")
_GRAPH_ON_LOSSES = ("sharded_loss returns each rank's loss detached; not detached, the values are the same and the "
                    "graph behind them is already spent (the gradients were taken by autograd.grad): a loss that "
                    "requires grad is what any loss function returns, not a wrong output")
_BATCH_VIEW = ("_batch_view is reached from denoiser_loss alone, whose sigma has been checked to be (B,) with "
               "B = y.shape[0]: a (B,) viewed against a one-dimensional y stays (B,) whichever test lets it through, "
               "and against a wider y it is viewed (B, 1, ..., 1) either way")
_DETACHED_OUTPUTS = ("sharded_loss returns its losses detached and the features' gradients by autograd.grad with "
                     "respect to the features alone: whether t' and b are detached first changes no value and "
                     "leaves no graph on any output")

EQUIVALENT: dict[str, str] = {
    "mdp._check_stochastic: worst > STOCHASTIC_ATOL -> worst >= STOCHASTIC_ATOL": _NEVER_EXACTLY_TOLERANCE,
    "mdp.check_transitions: worst > STOCHASTIC_ATOL -> worst >= STOCHASTIC_ATOL": _NEVER_EXACTLY_TOLERANCE,
    "siglip.sharded_loss: check_scalar('t_prime', t_prime).detach() -> check_scalar('t_prime', t_prime)":
        _DETACHED_OUTPUTS,
    "siglip.sharded_loss: check_scalar('bias', bias).detach() -> check_scalar('bias', bias)": _DETACHED_OUTPUTS,
    "monte_carlo._Sampler: 2 * length -> 3 * length": _SAME_DRAWS,
    "monte_carlo._Sampler: 2 * t + 1 -> 2 * t - 1": _SAME_DRAWS,
    "monte_carlo._Sampler: cdf / cdf[..., -1:] -> cdf * cdf[..., -1:]": _CDF_ROUNDING,
    "monte_carlo._Sampler: cdf / cdf[..., -1:] -> cdf": _CDF_ROUNDING,
    "monte_carlo._Sampler: pi_cdf / pi_cdf[:, -1:] -> pi_cdf * pi_cdf[:, -1:]": _CDF_ROUNDING,
    "monte_carlo._Sampler: pi_cdf / pi_cdf[:, -1:] -> pi_cdf": _CDF_ROUNDING,
    "monte_carlo._categorical: cdf / cdf[..., -1:] -> cdf * cdf[..., -1:]": _CDF_ROUNDING,
    "monte_carlo._categorical: cdf / cdf[..., -1:] -> cdf": _CDF_ROUNDING,
    "monte_carlo._categorical: right=True -> right=False": _CDF_ROUNDING,
    "monte_carlo.first_visits: int(pair.max()) + 1 -> int(pair.max()) + 2": _NEVER_INDEXED,
    "monte_carlo.mc_action_values: num > 0 -> num >= 0": _UNVISITED,
    "monte_carlo.mc_action_values: min=1 -> min=0": _UNVISITED,
    "monte_carlo.generate_episodes: s0.clone() -> s0": _REBOUND,
    "monte_carlo.generate_episodes: a0.clone() -> a0": _REBOUND,
    "stochastic_approximation.mbgd: torch.as_tensor(w1, dtype=F64, device=X.device).clone()"
    " -> torch.as_tensor(w1, dtype=F64, device=X.device)":
        _FIRST_ITERATE_READ_ONLY,
    "stochastic_approximation.bgd: torch.as_tensor(w1, dtype=F64, device=X.device).clone()"
    " -> torch.as_tensor(w1, dtype=F64, device=X.device)":
        _FIRST_ITERATE_READ_ONLY,
    "stochastic_approximation.sgd: torch.as_tensor(w1, dtype=F64, device=x.device).clone()"
    " -> torch.as_tensor(w1, dtype=F64, device=x.device)":
        _FIRST_ITERATE_READ_ONLY,
    "stochastic_approximation.robbins_monro: torch.as_tensor(w1, dtype=F64, device=eta.device).expand(eta.shape[1:])"
    ".clone()"
    " -> torch.as_tensor(w1, dtype=F64, device=eta.device).expand(eta.shape[1:])":
        _FIRST_ITERATE_READ_ONLY,
    "stochastic_approximation.dvoretzky: torch.as_tensor(delta1, dtype=F64, device=eta.device).expand(eta.shape[1:])"
    ".clone()"
    " -> torch.as_tensor(delta1, dtype=F64, device=eta.device).expand(eta.shape[1:])":
        _FIRST_ITERATE_READ_ONLY,
    "blip.check_itc_args: 1:4 -> 1:5": _ZIP_TRUNCATES,
    "blip.check_hard_negative_args: sim.shape[0] -> sim.shape[1] (#2)": _SQUARE_SIM,
    "blip.itc_loss: tau.detach() -> tau": _NO_GRAD_TEMPERATURE,
    "blip.itc_loss: tau.detach() -> tau (#2)": _NO_GRAD_TEMPERATURE,
    "clip.contrastive_loss: L.shape[0] -> L.shape[1] (#2)": _SQUARE_LOGITS,
    "siglip.pairwise_loss: L.shape[0] -> L.shape[1] (#2)": _SQUARE_LOGITS,
    "siglip.sharded_loss: torch.stack(losses).detach() -> torch.stack(losses)": _GRAPH_ON_LOSSES,
    "dpo.check_fused_args: N // 2 -> N / 2": _EVEN_BATCH,
    "edm.training._batch_view: v.dim() == 1 and x.dim() > 1 and (v.shape[0] == x.shape[0]) -> v.dim() == 1 or "
    "x.dim() > 1 or v.shape[0] == x.shape[0]": _BATCH_VIEW,
    "edm.training._batch_view: x.dim() > 1 -> x.dim() >= 1": _BATCH_VIEW,
    "edm.training._batch_view: x.dim() > 1 -> x.dim() > 0": _BATCH_VIEW,
    "clip.zero_shot_classifier: normalize(e).mean -> normalize(e).sum": _MEAN_THEN_NORMALISE,
    "siglip.local_block_loss: L.shape[0] -> L.shape[1]": _SQUARE_BLOCK,
    "edm.discretization.time_steps: low=0.001 -> low=0.002": _RHO_FLOOR,
    "edm.discretization.iddpm_u: M + 1 -> M + 2": _IDDPM_TAIL,
    "score_sde._t: X.dim() >= 1 -> X.dim() > 1": _ONE_DIM_RESHAPE,
    "score_sde._t: X.dim() >= 1 -> X.dim() >= 2": _ONE_DIM_RESHAPE,
    "edm.steps.flow_shift: low=1e-300 -> low=2e-300": _SHIFT_FLOOR,
    "flash_attention.check_cu_seqlens: len(values) < 2 -> len(values) < 1": _ONE_ENTRY_CU,
    "kimi_vl.pos_emb: :2 -> :3": _BICUBIC_IDENTITY,
    "kimi_vl.pos_emb: :2 -> :1": _BICUBIC_IDENTITY,
    "kimi_vl.check_encoder_params: D // heads -> D / heads": _DIVIDES_FIRST,
    "kimi_vl.rope_frequencies: d // 4 -> d / 4": _MULTIPLE_OF_FOUR,
    "flash_attention.online_softmax: -1 -> -0 (#2)": _STATE_BROADCASTS,
    "flash_attention.online_softmax: -1 -> -0 (#3)": _STATE_BROADCASTS,
    "flash_attention.tiled_attention: 32 -> 31": _BLOCK_SIZE,
    "flash_attention.tiled_attention: 32 -> 33": _BLOCK_SIZE,
    "flash_attention.tiled_attention: 32 -> 31 (#2)": _BLOCK_SIZE,
    "flash_attention.tiled_attention: 32 -> 33 (#2)": _BLOCK_SIZE,
    "validators.check_scalar: torch.isfinite(value).all -> torch.isfinite(value).any": _ONE_ELEMENT,
    "blip.hard_negative_weights: sim.shape[0] -> sim.shape[1]": _SQUARE_SIM,
    "blip.hard_negative_weights: sim.shape[1] -> sim.shape[0]": _SQUARE_SIM,
    "blip.hard_negative_weights: sim.shape[0] -> sim.shape[1] (#2)": _SQUARE_SIM,
    "rl_basics.TIE_RTOL: 64 * EPS -> 65 * EPS": _TIE_BAND,
    "rl_basics.TIE_RTOL: 64 * EPS -> 63 * EPS": _TIE_BAND,
    "rl_basics.greedy_policy: TIE_RTOL * max(1.0, float(q.abs().max())) -> "
    "TIE_RTOL / max(1.0, float(q.abs().max()))": _TIE_BAND,
    "rl_basics.greedy_policy: TIE_RTOL * max(1.0, float(q.abs().max())) -> TIE_RTOL": _TIE_BAND,
    "rl_basics.greedy_policy: max(1.0, float(q.abs().max())) -> max(2.0, float(q.abs().max()))": _TIE_BAND,
    "rl_basics.greedy_policy: q.abs().max -> q.abs().min": _TIE_BAND,
    "rl_basics.greedy_policy: q.abs() -> q": _TIE_BAND,
    "rl_basics.greedy_policy: q >= q.max(dim=1, keepdim=True).values - tau -> "
    "q > q.max(dim=1, keepdim=True).values - tau": _TIE_BAND,
    "rl_basics.greedy_policy: q.max(dim=1, keepdim=True).values - tau -> q.max(dim=1, keepdim=True).values":
        _TIE_BAND,
    "rl_basics.policy_iteration: 1000 -> 1001": _PI_CAP,
    "rl_basics.policy_iteration: 1000 -> 999": _PI_CAP,
}
