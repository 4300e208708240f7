import sys, time, json, torch
sys.path.insert(0, "lib"); sys.path.insert(0, "tests")
from uvlm.model import UVLM, UVLMConfig
from uvlm.plans import build_plan, LayerMode
from uvlm.flops import plan_flops
from uvlm.generate import generate_images
torch.backends.cuda.matmul.allow_tf32 = False; torch.backends.cudnn.allow_tf32 = False
dev = "cuda"
print(torch.__version__, torch.cuda.get_device_name())
# ---- correctness: cuda vs cpu
import test_accelerators as TA
for gqa in (4, 2):
    m = TA.tiny_model(sets=("img",), n_kv_heads=gqa)
    import copy; mc = copy.deepcopy(m).to(dev)
    for kind, plan in [("u", build_plan("u","himix",6)), ("u", build_plan("u","himix",6,himix_start_layer=2)), ("g", build_plan("g","hmgen",6,hmgen_k=2)), ("g", None)]:
        ids = TA.batch(kind)
        mask = torch.ones_like(ids); 
        pad = torch.cat([torch.zeros(2,3,dtype=torch.long), ids],1); pm = torch.cat([torch.zeros(2,3,dtype=torch.long), mask],1)
        with torch.no_grad():
            a = m(pad, plan=plan, attention_mask=pm).logits; b = mc(pad.to(dev), plan=plan, attention_mask=pm.to(dev)).logits.cpu()
            c = mc(ids.to(dev), plan=plan).logits.cpu()
        print("cuda==cpu", gqa, kind, (a-b).abs().max().item(), (a[:, 3:] - c).abs().max().item() if plan is None or plan[-1].mode!="himix" else (b[:,3:]-c).abs().max().item())
    prompts = [[1,7,8,9,3],[1,7,10,11,12,13,14,3],[1,15,3]]
    for plan in (None, build_plan("g","hmgen",6,hmgen_k=2)):
        f = generate_images(mc, prompts, 6, plan=plan, temperature=0); s = generate_images(mc, prompts, 6, plan=plan, temperature=0, use_cache=False)
        g = generate_images(m, prompts, 6, plan=plan, temperature=0)
        print("gen cache==nocache", torch.equal(f,s), "cuda==cpu", torch.equal(f.cpu(), g))
torch.backends.cuda.matmul.allow_tf32 = True
# ---- benchmark
def bench(d, L, H, B, T, M, vocab=1280, compile=False):
    cfg = UVLMConfig(vocab_size=vocab, image_token_start=vocab-256, d_model=d, n_layers=L, n_heads=H, n_kv_heads=H, max_seq_len=1024, image_proj_sets=["img"])
    model = UVLM(cfg).to(dev)
    fwd = torch.compile(model) if compile else model
    res = {}
    for name, task, plan in [("base_u","u",None),("himix","u",build_plan("u","himix",L)),("base_g","g",None),("hmgen3","g",build_plan("g","hmgen",L,hmgen_k=3)),("hmgen5","g",build_plan("g","hmgen",L,hmgen_k=5)),("hmgen0","g",build_plan("g","hmgen",L,hmgen_k=0))]:
        pre = 20 if task=="u" else T-1
        ids = torch.cat([torch.randint(6, vocab-256, (B, pre)), torch.randint(vocab-256, vocab, (B, M)), torch.randint(6, vocab-256, (B, T-pre))],1).to(dev)
        labels = torch.full_like(ids, -100)
        nt = 12 if task=="u" else M
        labels[:, -nt:] = ids[:, -nt:]
        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = fwd(ids, labels=labels, plan=plan)
            out.loss.backward()
        for _ in range(3): step()
        torch.cuda.synchronize(); t=time.perf_counter(); n=10
        for _ in range(n): step()
        torch.cuda.synchronize(); dt=(time.perf_counter()-t)/n
        fl = plan_flops(cfg, plan, T, M, loss_tokens=int((labels[0,1:]!=-100).sum()))["total"]*B
        res[name] = (dt, fl)
    out = {}
    for a, bname in [("himix","base_u"),("hmgen3","base_g"),("hmgen5","base_g"),("hmgen0","base_g")]:
        sp = res[bname][0]/res[a][0]; ideal = res[bname][1]/res[a][1]
        out[a] = f"speedup {sp:.2f} ideal {ideal:.2f} frac {sp/ideal:.2f}"
    print(f"d={d} L={L} B={B} T={T} M={M} compile={compile}", {k: f"{v[0]*1e3:.1f}ms {v[1]/v[0]/1e12:.0f}TF/s" for k,v in res.items()}, out, flush=True)
bench(512, 12, 8, 256, 48, 256)
bench(1024, 12, 16, 64, 48, 256)
bench(512, 12, 8, 64, 48, 256)
try:
    bench(512, 12, 8, 64, 48, 256, compile=True)
    bench(512, 12, 8, 256, 48, 256, compile=True)
except Exception as e:
    print("compile failed", repr(e)[:2000])
