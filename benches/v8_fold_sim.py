# Blockwise output pass, v7 (decay the state every block) vs v8 (fold the decay into K while
# the growth stays under e^L), in float64 and with bf16 rounding of the MMA operands.
import math, random, struct
def bf16(x):
    b = struct.unpack('<I', struct.pack('<f', x))[0]
    b = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000
    return struct.unpack('<f', struct.pack('<I', b))[0]
def ident(x): return x
BLK=32
def run(q,k,v,s,S0,fold_limit,rnd,shift_inter,shift_update):
    n=len(q); d=len(q[0]); e=len(v[0])
    kv=[row[:] for row in S0]
    kvb=[[rnd(x) for x in row] for row in kv]
    tau=0; out=[]
    for t0 in range(0,n,BLK):
        m=min(BLK,n-t0)
        grown=tau+m
        fold = s*grown <= fold_limit
        k_e0 = m-1+shift_update - (grown if fold else 0)
        qd=[[rnd(x*math.exp(-s*(tau+shift_inter+i))) for x in q[t0+i]] for i in range(m)]
        kd=[[rnd(x*math.exp(-s*(k_e0-j))) for x in k[t0+j]] for j in range(m)]
        qs=[[rnd(x) for x in q[t0+i]] for i in range(m)]
        ks=[[rnd(x) for x in k[t0+j]] for j in range(m)]
        vs=[[rnd(x) for x in v[t0+j]] for j in range(m)]
        if not fold:
            lm=math.exp(-s*grown)
            kv=[[x*lm for x in row] for row in kv]
        for i in range(m):
            p=[rnd(sum(qs[i][a]*ks[j][a] for a in range(d))*math.exp(-s*(i-j))) if j<=i else 0.0 for j in range(m)]
            o=[sum(qd[i][a]*kvb[a][c] for a in range(d))+sum(p[j]*vs[j][c] for j in range(m)) for c in range(e)]
            out.append(o)
        for a in range(d):
            for c in range(e):
                kv[a][c]+=sum(kd[j][a]*vs[j][c] for j in range(m))
        kvb=[[rnd(x) for x in row] for row in kv]
        tau = tau+m if fold else 0
    sc=math.exp(-s*tau)
    return out,[[x*sc for x in row] for row in kv]
def err(a,b):
    num=max(abs(x-y) for ra,rb in zip(a,b) for x,y in zip(ra,rb)); den=max(abs(y) for rb in b for y in rb)
    return num/den
random.seed(1)
n,d,e=300,8,8
R=lambda r,c:[[random.uniform(-1,1) for _ in range(c)] for _ in range(r)]
q,k,v,S0=R(n,d),R(n,d),R(n,e),R(d,e)
for shifts in [(1,0),(0,1)]:
    for s in [0.0,0.01,0.1,0.3,1.0,1.5,8.0]:
        o7,f7=run(q,k,v,s,S0,0.0,ident,*shifts)
        o8,f8=run(q,k,v,s,S0,40.0,ident,*shifts)
        b7,g7=run(q,k,v,s,S0,0.0,bf16,*shifts)
        b8,g8=run(q,k,v,s,S0,40.0,bf16,*shifts)
        print(f"shifts {shifts} slope {s:5}: f64 v8-v7 out {err(o8,o7):.1e} state {err(f8,f7):.1e} | bf16 err vs f64: v7 {err(b7,o7):.2e}/{err(g7,f7):.2e} v8 {err(b8,o7):.2e}/{err(g8,f7):.2e}")
