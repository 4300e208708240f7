import sys, time, torch
sys.path.insert(0, "lib")
from uvlm.model import UVLM, UVLMConfig
from uvlm.plans import build_plan, LayerMode
from uvlm.flops import plan_flops
from torch.profiler import profile, ProfilerActivity
torch.backends.cuda.matmul.allow_tf32 = True
dev="cuda"
d,L,H,B,T,M,vocab = 512,12,8,256,48,256,1280
cfg = UVLMConfig(vocab_size=vocab, image_token_start=vocab-256, d_model=d, n_layers=L, n_heads=H, n_kv_heads=H, max_seq_len=1024, image_proj_sets=["img"])
model = UVLM(cfg).to(dev)
hm3 = build_plan("g","hmgen",L,hmgen_k=3)
noproj = [LayerMode(m.mode, None) for m in hm3]
runs = [("base_u","u",None),("himix","u",build_plan("u","himix",L)),("base_g","g",None),("hmgen3","g",hm3),("hmgen0","g",build_plan("g","hmgen",L,hmgen_k=0)),("shallow3_noproj","g",noproj)]
times = {}
for name, task, plan in runs:
    pre = 20 if task=="u" else T-1
    ids = torch.cat([torch.randint(6, vocab-256, (B, pre)), torch.randint(vocab-256, vocab, (B, M)), torch.randint(6, vocab-256, (B, T-pre))],1).to(dev)
    labels = torch.full_like(ids, -100); nt = 12 if task=="u" else M; labels[:, -nt:] = ids[:, -nt:]
    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(ids, labels=labels, plan=plan)
        out.loss.backward()
    for _ in range(3): step()
    torch.cuda.synchronize(); t=time.perf_counter()
    for _ in range(5): step()
    torch.cuda.synchronize(); dt=(time.perf_counter()-t)/5
    fl = plan_flops(cfg, plan, T, M, loss_tokens=int((labels[0,1:]!=-100).sum()))["total"]*B
    times[name]=(dt, fl)
    with profile(activities=[ProfilerActivity.CUDA]) as p:
        step(); torch.cuda.synchronize()
    ev = [e for e in p.key_averages() if e.device_type.name == "CUDA"] if hasattr(p.key_averages()[0], "device_type") else []
    tot = sum(e.self_device_time_total for e in p.key_averages())
    print(f"===== {name} step {dt*1e3:.1f}ms  gpu {tot/1e3:.1f}ms  flops {fl/1e12:.2f}T")
    rows = sorted(p.key_averages(), key=lambda e: -e.self_device_time_total)[:12]
    for e in rows:
        if e.self_device_time_total > 0:
            print(f"  {e.self_device_time_total/1e3:7.2f}ms {e.count:5d}  {e.key[:110]}")
