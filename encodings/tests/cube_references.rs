//! The references run unchanged on every compiled CubeCL device (wgpu: lavapipe in CI) and
//! agree with flex. The rotary reference is called directly (`rotary::reference::apply`):
//! `RotaryEncoding::apply` would dispatch to the fused kernel there, which `fused.rs` tests.
#![cfg(feature = "cube")]

mod common;

use burn::prelude::*;
use common::*;
use pezoo_encodings::{EncodingContext, Side};

fn rotary_and_bias_references_agree_with_flex(gpu: Device) {
    let cpu = device();
    let (b, h, s, d) = (2, 3, 7, 10);
    let ctx = EncodingContext::new(d, h, Some(64));
    let x = random_vec(&mut rng(1), b * h * s * d);
    for toml in ["kind = \"rope\"\nlayout = \"interleaved\"", "kind = \"hope-hyp\"", "kind = \"xpos\""] {
        let on = |dev: &Device| {
            let enc = build(toml, &ctx, dev);
            let r = enc.as_dyn().rotary().unwrap().clone();
            let x = tensor4(x.clone(), [b, h, s, d], dev);
            host(pezoo_encodings::rotary::reference::apply(&r, x, &[5, -1_000_000], Side::Key, s))
        };
        let (g, c) = (on(&gpu), on(&cpu));
        let want: Vec<f64> = c.iter().map(|&v| v as f64).collect();
        assert_close(&g, &want, 1e-5, toml);
    }
    let on = |dev: &Device| {
        host(build("kind = \"alibi\"", &ctx, dev).as_dyn().attention_bias(3..9, 0..9, dev).unwrap())
    };
    let want: Vec<f64> = on(&cpu).iter().map(|&v| v as f64).collect();
    assert_close(&on(&gpu), &want, 1e-6, "alibi");
}

pezoo_encodings::cube_tests!(rotary_and_bias_references_agree_with_flex);
