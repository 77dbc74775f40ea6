"""A ~1.07B-parameter random Llama for the HuRef benchmark: the shapes of a 1B model, offline."""

from __future__ import annotations

import json
from pathlib import Path

SYNTH_1B = {
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 22,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "head_dim": 64,
}


def synthetic_1b(root: Path) -> Path:
    """A ~1.07B-parameter random Llama (fp32, 2 shards + index), SmolLM2's tokenizer; cached."""
    # Over 60 lines on purpose: the 1B model's config and tensor shapes are spelled out.
    import numpy as np
    from safetensors.numpy import save_file

    from tasks.models.zoo import resolve_model

    out = root / "bench" / "llama-1b-random"
    if (out / "done").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    tok_src = resolve_model("smollm2-135m-instruct")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (out / f).write_bytes((tok_src / f).read_bytes())
    c = SYNTH_1B
    vocab = json.loads((tok_src / "config.json").read_text())["vocab_size"]
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "tie_word_embeddings": True,
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 2048,
        "hidden_act": "silu",
        "dtype": "float32",
        **c,
    }
    (out / "config.json").write_text(json.dumps(config, indent=1))
    rng = np.random.default_rng(0)
    d, i, hd = c["hidden_size"], c["intermediate_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    shapes = {"model.embed_tokens.weight": (vocab, d), "model.norm.weight": (d,)}
    for layer in range(c["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        a, m = p + "self_attn.", p + "mlp."
        shapes.update(
            {
                a + "q_proj.weight": (q, d),
                a + "k_proj.weight": (kv, d),
                a + "v_proj.weight": (kv, d),
                a + "o_proj.weight": (d, q),
                m + "gate_proj.weight": (i, d),
                m + "up_proj.weight": (i, d),
                m + "down_proj.weight": (d, i),
                p + "input_layernorm.weight": (d,),
                p + "post_attention_layernorm.weight": (d,),
            }
        )
    names = list(shapes)
    half = len(names) // 2
    weight_map = {}
    for s, part in enumerate((names[:half], names[half:])):
        fname = f"model-{s + 1:05d}-of-00002.safetensors"
        tensors = {
            n: (
                np.ones(shapes[n], np.float32)
                if len(shapes[n]) == 1
                else 0.02 * rng.standard_normal(shapes[n], dtype=np.float32)
            )
            for n in part
        }
        save_file(tensors, str(out / fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in part})
        del tensors
    n_params = sum(int(np.prod(s)) for s in shapes.values())
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 4 * n_params}, "weight_map": weight_map})
    )
    (out / "done").write_text(str(n_params))
    return out
