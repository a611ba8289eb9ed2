/* The depthwise kernels alone, batch 32, 14x14, 128 channels, fp32, k=5: median of 41 calls, on N threads (argv[1]).
 * This is how the seventh session (2026-12-05) found that the forward kernel ran no faster on two threads than on
 * one with the dynamic schedule. Build against a kernels.c (AVX2 as on an AVX2-only CPU: -mno-avx512f), e.g.
 *   git show a0653b4:src/convmixer/fast/kernels.c > /tmp/k.c
 *   gcc -O3 -std=gnu11 -fno-math-errno -Wno-psabi -march=native -mno-avx512f -fopenmp -DKS=5 /tmp/k.c dw_threads.c -o dw -lm
 *   ./dw 1; ./dw 2
 * Machine D, a0653b4's kernels: fwd 0.60-0.62 ms (65-67 GFLOP/s) on 1 thread, 0.44-1.37 ms on 2 (machine load
 * varying); with schedule(static) in the forward kernel, 2 threads: 0.31-0.52 ms against 0.45-0.57 ms (10 alternating
 * runs each). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
void cmx_dw_fwd(const void* x, const float* w, const float* bias, int flip, int act, const float* scale,
                const float* shift, int residual, void* out, int bf, long B, long H, long W, long C, long pt, long pl,
                int nthreads);
void cmx_dw_wgrad(const void* x, const void* g, float* gw, float* gb, int bf, long B, long H, long W, long C, long pt,
                  long pl, int nthreads);
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+1e-9*t.tv_nsec;}
int cmp(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
int main(int argc,char**argv){
  long B=32,H=14,W=14,C=128; int nt=argc>1?atoi(argv[1]):1;
  long n=B*H*W*C; float*x=malloc(n*4),*o=malloc(n*4),*w=malloc(C*25*4),*b=malloc(C*4),*gw=malloc(C*25*4),*gb=malloc(C*4);
  for(long i=0;i<n;i++){x[i]=(float)((i*7919)%1000)/1000.f-0.5f;o[i]=0;}
  for(long i=0;i<C*25;i++)w[i]=(float)(i%13)/13.f; for(long i=0;i<C;i++)b[i]=0.1f;
  double ts[41],tw[41];
  for(int r=0;r<41;r++){double t0=now();cmx_dw_fwd(x,w,b,0,0,0,0,0,o,0,B,H,W,C,2,2,nt);ts[r]=now()-t0;
    t0=now();cmx_dw_wgrad(x,o,gw,gb,0,B,H,W,C,2,2,nt);tw[r]=now()-t0;}
  qsort(ts,41,8,cmp);qsort(tw,41,8,cmp);
  double fl=2.0*B*H*W*C*25;
  printf("fwd %.3f ms %.1f GFLOP/s | wgrad %.3f ms %.1f GFLOP/s  chk %g %g\n",ts[20]*1e3,fl/ts[20]/1e9,tw[20]*1e3,fl/tw[20]/1e9,o[12345],gw[77]);
}
