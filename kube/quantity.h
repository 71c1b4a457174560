/*
 * Kubernetes resource quantities ("512Mi", "1G", "100Ki", "1.5Gi", "128974848")
 * as byte counts.
 *
 * Binary suffixes (Ki, Mi, Gi, Ti, Pi, Ei) are powers of 1024, decimal ones
 * (k, M, G, T, P, E) powers of 1000, "m" is a thousandth, and an exponent
 * form such as "1e6" is accepted, as the API server accepts them.
 * Fractions round up to a whole byte, as the API server does for memory.
 */
#ifndef KUBE_QUANTITY_H
#define KUBE_QUANTITY_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Parses text into *bytes.  Returns 0, -EINVAL for text that is not a
 * quantity or is negative, or -ERANGE above 2^63 - 1.
 */
int quantity_parse(const char *text, int64_t *bytes);

/*
 * Parses a JSON quantity, which the API sends as a string or an integer.
 * Returns what quantity_parse() returns, or -EINVAL for other JSON types.
 */
int quantity_from_json(struct json_object *value, int64_t *bytes);

/*
 * Writes bytes in the shortest exact form: "512Mi", "1536Ki", "1000".
 * buf should have room for 24 bytes.
 */
void quantity_format(int64_t bytes, char *buf, size_t size);

#endif
