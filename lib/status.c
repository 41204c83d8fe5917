/* SPDX-License-Identifier: MIT */
/*
 * status.c -- the list of codes in axstm.h, turned into messages.
 */
#include "axstm.h"

AXSTM_API const char *axstm_strerror(int code)
{
    switch (code) {
#define AXSTM_CODE_MSG_(name, value, msg) \
    case AXSTM_##name:                    \
        return msg;
        AXSTM_CODE_MAP(AXSTM_CODE_MSG_)
#undef AXSTM_CODE_MSG_
    }
    return code > 0 ? "caller-defined code" : "unknown error";
}
