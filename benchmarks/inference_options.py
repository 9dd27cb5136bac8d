"""Which PyTorch inference options speed up the pipelines on this machine.

    python benchmarks/inference_options.py --ddpm hsr-diffusers/ddpm-cave --pixelgan hsr-diffusers/pixelgan-cave

Times the network forward pass of each pipeline on one 256x256 tile (batch 1 and a batch of 4 tiles) under:
`torch.no_grad` (what the pipelines use), `torch.inference_mode`, channels-last memory format, bfloat16 weights and
inputs, and `torch.compile`. Reports the median of `--repeats` timed calls after warm-up, the speed-up over the
baseline, and the largest output difference to the float32 baseline (bf16 changes numbers; the others should not).
"""

import argparse
import statistics
import time

import torch
from common import markdown_table, write_result

from hsr_diffusers import HSRPipeline


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ddpm", default="hsr-diffusers/ddpm-cave")
    parser.add_argument("--pixelgan", default="hsr-diffusers/pixelgan-cave")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no_compile", action="store_true", help="Skip torch.compile (slow to warm up).")
    parser.add_argument("--output", default="inference_options")
    return parser.parse_args(argv)


def forward_fn(pipe, batch: int, size: int):
    """A closure running the pipeline's network once on a random input of the right channel count."""
    generator = torch.Generator().manual_seed(0)
    channels = pipe.unet.config.in_channels
    sample = torch.rand(batch, channels, size, size, generator=generator) * 2 - 1
    if pipe.is_sampler:  # the denoiser takes a timestep
        timestep = torch.full((batch,), 500)
        return sample, lambda model, x: model(x, timestep).sample
    return sample, lambda model, x: model(x).sample


def time_call(call, repeats: int) -> float:
    call()  # warm-up (and compilation)
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(args):
    rows = []
    for label, path in (("DDPM UNet", args.ddpm), ("PixelGAN generator", args.pixelgan)):
        pipe = HSRPipeline.from_pretrained(path)
        for batch in (1, 4):
            sample, run = forward_fn(pipe, batch, args.size)
            model = pipe.unet.eval()
            with torch.no_grad():
                reference = run(model, sample).float()
            variants = {
                "no_grad (baseline)": (torch.no_grad, model, sample),
                "inference_mode": (torch.inference_mode, model, sample),
                "channels_last": (
                    torch.no_grad,
                    model.to(memory_format=torch.channels_last),
                    sample.to(memory_format=torch.channels_last),
                ),
            }
            bf16_model = type(model).from_config(model.config)
            bf16_model.load_state_dict(model.state_dict())
            bf16_model = bf16_model.to(torch.bfloat16).eval()
            variants["bfloat16"] = (torch.no_grad, bf16_model, sample.to(torch.bfloat16))
            if not args.no_compile:
                variants["torch.compile"] = (torch.no_grad, torch.compile(model), sample)
            baseline = None
            for name, (context, variant_model, variant_input) in variants.items():

                def call(variant_model=variant_model, variant_input=variant_input, context=context):
                    with context():
                        return run(variant_model, variant_input)

                try:
                    seconds = time_call(call, args.repeats)
                    difference = (call().float() - reference).abs().max().item()
                except Exception as error:  # a backend that does not work here is a result too
                    rows.append([label, batch, name, f"failed: {type(error).__name__}", "-", "-"])
                    continue
                baseline = baseline or seconds
                rows.append([label, batch, name, round(seconds, 4), round(baseline / seconds, 2), f"{difference:.2e}"])
                print(rows[-1], flush=True)
            model.to(memory_format=torch.contiguous_format)
    body = (
        f"Network forward pass on {args.size}x{args.size} tiles, median of {args.repeats} calls after 2 warm-up calls.\n\n"
        + markdown_table(["network", "batch", "option", "seconds", "speed-up", "max abs diff"], rows)
        + "\n"
    )
    write_result(args.output, "PyTorch inference options", body)


if __name__ == "__main__":
    main(parse_args())
