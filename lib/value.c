/*
 * value.c -- value handles (Axon's usevar).
 */
#include "axstm-internal.h"

#include <string.h>

AXSTM_API int axstm_usevar(axstm_store *s, const char *key, axstm_value **out)
{
    size_t len;
    if (s == NULL || out == NULL)
        return AXSTM_EINVAL;
    int rc = axstm__check_key(key, &len);
    if (rc != AXSTM_OK)
        return rc;
    axstm_value *v = axstm__handle_alloc(sizeof *v);
    if (v == NULL)
        return AXSTM_ENOMEM;
    v->item = (struct axstm__item){NULL, 0, {0, 0}};
    v->store = s;
    v->owner = NULL;

    struct axstm__keyref ref = {key, len, 0, NULL};
    struct axstm__item *items[1] = {&v->item};
    uint64_t vlock, version;
    struct axstm__val val;
    unsigned pin = axstm__epoch_pin(&s->epoch);
    rc = axstm__table_find_or_create(&s->table, &ref, 1);
    if (rc == AXSTM_OK) {
        v->item.entry = ref.entry;
        rc = axstm__snapshot(s, items, 1, &vlock, &version, &val);
    }
    axstm__epoch_unpin(&s->epoch, pin);
    if (rc != AXSTM_OK) {
        axstm__handle_free(v, sizeof *v);
        return axstm__busy(s, rc);
    }
    *out = v;
    return AXSTM_OK;
}

AXSTM_API const char *axstm_value_key(const axstm_value *v)
{
    return v != NULL ? v->item.entry->key : NULL;
}

AXSTM_API uint64_t axstm_value_version(const axstm_value *v)
{
    return v != NULL ? v->item.version : 0;
}

AXSTM_API const void *axstm_value_data(const axstm_value *v, size_t *len)
{
    size_t n = 0;
    const void *data = v != NULL ? axstm__val_data(&v->item.val, &n) : NULL;
    if (len != NULL)
        *len = n;
    return data;
}

AXSTM_API int axstm_value_set(axstm_value *v, const void *data, size_t len)
{
    if (v == NULL || (data == NULL && len != 0))
        return AXSTM_EINVAL;
    if (len > AXSTM_VALUE_MAX)
        return AXSTM_E2BIG;
    return axstm__val_make(&v->item.val, data, len);
}

AXSTM_API int axstm_value_get_i64(const axstm_value *v, int64_t *out)
{
    if (v == NULL || out == NULL)
        return AXSTM_EINVAL;
    return axstm__val_get_i64(&v->item.val, out);
}

AXSTM_API int axstm_value_set_i64(axstm_value *v, int64_t x)
{
    if (v == NULL)
        return AXSTM_EINVAL;
    return axstm__val_make(&v->item.val, &x, sizeof x);
}

AXSTM_API int axstm_value_get_str(const axstm_value *v, const char **out)
{
    if (v == NULL || out == NULL)
        return AXSTM_EINVAL;
    size_t len;
    const char *data = axstm__val_data(&v->item.val, &len);
    if (data == NULL)
        return AXSTM_ENOVALUE;
    if (len == 0 || memchr(data, '\0', len) != data + len - 1)
        return AXSTM_ETYPE;
    *out = data;
    return AXSTM_OK;
}

AXSTM_API int axstm_value_set_str(axstm_value *v, const char *str)
{
    if (v == NULL || str == NULL)
        return AXSTM_EINVAL;
    size_t len = strnlen(str, AXSTM_VALUE_MAX);
    if (len >= AXSTM_VALUE_MAX)
        return AXSTM_E2BIG; /* with its NUL it would not fit */
    return axstm_value_set(v, str, len + 1);
}

AXSTM_API int axstm_value_commit(axstm_value *v)
{
    if (v == NULL || v->owner != NULL)
        return AXSTM_EINVAL;
    struct axstm__item *items[1] = {&v->item};
    uint64_t scratch;
    return axstm__commit(v->store, items, 1, &scratch, NULL);
}

AXSTM_API int axstm_value_refresh(axstm_value *v)
{
    if (v == NULL || v->owner != NULL)
        return AXSTM_EINVAL;
    struct axstm__item *items[1] = {&v->item};
    uint64_t vlock, version;
    struct axstm__val val;
    unsigned pin = axstm__epoch_pin(&v->store->epoch);
    int rc = axstm__snapshot(v->store, items, 1, &vlock, &version, &val);
    axstm__epoch_unpin(&v->store->epoch, pin);
    return axstm__busy(v->store, rc);
}

AXSTM_API void axstm_value_free(axstm_value *v)
{
    if (v == NULL || v->owner != NULL)
        return;
    axstm__val_release(&v->item.val);
    axstm__handle_free(v, sizeof *v);
}
