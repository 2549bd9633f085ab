/* gm_tpl_end.h -- closes one dtype instantiation opened by gm_tpl.h. */
#undef GM_T
#undef GM_FN
#undef GM_IS_F32
#undef GM_EXP
#undef GM_EXP_IN
#undef GM_FABS
#undef GM_T_MAX
#undef GM_T_TINY
#undef GM_GEMM
#undef GM_TPL
