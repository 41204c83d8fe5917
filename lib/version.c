/* SPDX-License-Identifier: MIT */
/*
 * version.c -- the release of the library actually loaded, which may be
 * another than the one whose header a program was compiled with.
 */
#include "axstm.h"

AXSTM_API unsigned int axstm_version(void)
{
    return AXSTM_VERSION_HEX;
}

AXSTM_API const char *axstm_version_string(void)
{
    return AXSTM_VERSION_STRING;
}
