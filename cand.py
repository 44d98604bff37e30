import sys, time, numpy as np, scipy.sparse as sp, scipy.sparse.linalg as spla
sys.path.insert(0,'/tmp/solver'); 
from ladder import ladder
from physgrad.circuit.reduction import build_problem
from physgrad.circuit.solvers.kkt import eliminate
from verification.circuits import training_graph, random_grid_graph
import qdldl
def reduced(c, W=None):
    pb = build_problem(c)
    H = pb.H.tocsr()
    return H
def timeit(f, rep=3):
    best=1e9
    for _ in range(rep):
        t=time.process_time(); r=f(); best=min(best,time.process_time()-t)
    return best, r
def run(name, A):
    A = sp.csc_matrix(A); n=A.shape[0]; b=np.random.default_rng(0).standard_normal(n)
    out={}
    t,lu = timeit(lambda: spla.splu(A, permc_spec="MMD_AT_PLUS_A", options=dict(SymmetricMode=True)))
    ts,_ = timeit(lambda: lu.solve(b)); out['splu_mmd']=(t,ts,lu.L.nnz+lu.U.nnz)
    t,lu2 = timeit(lambda: spla.splu(A, permc_spec="COLAMD"),1); ts,_=timeit(lambda: lu2.solve(b)); out['splu_colamd']=(t,ts,lu2.L.nnz+lu2.U.nnz)
    At = sp.triu(A, format='csc')
    t,F = timeit(lambda: qdldl.Solver(At)); ts,_=timeit(lambda: F.solve(b)); out['qdldl']=(t,ts, None)
    d=A.diagonal(); it=[0]
    def cb(x): it[0]+=1
    t,_=timeit(lambda: spla.cg(A,b,rtol=1e-14,atol=0,maxiter=20000,M=sp.diags(1/d),callback=cb),1); out['cg_jacobi']=(t,None,it[0])
    x = lu.solve(b); xq=F.solve(b)
    print(name, n, A.nnz, {k:tuple(None if v is None else round(v,4) for v in vals) for k,vals in out.items()}, 'agree', np.max(np.abs(x-xq))/np.max(np.abs(x)))
run('ladder33k', reduced(ladder(33333)))
for n in (1000, 10000):
    c,_,_ = training_graph(n, 0); run(f'train_graph{n}', reduced(c))
