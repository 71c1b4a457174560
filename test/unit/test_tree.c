/*
 * The stress tree: ordering, search hits and misses, residency of payload
 * pages (checked with mincore), memory returned on release, and a degenerate
 * chain deep enough that a recursive search would overflow the stack.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "worker/memlimit.h"
#include "worker/tree.h"

#define MIB ((uint64_t)1 << 20)

static void grow_and_find_every_key(void **state)
{
    struct tree tree;

    (void)state;
    tree_init(&tree, 42);
    for (int i = 0; i < 5000; i++)
        assert_int_equal(tree_grow(&tree, 512), 0);
    assert_int_equal(tree.nodes, 5000);
    assert_int_equal(tree.payload_bytes, 5000 * 512);
    for (uint64_t i = 0; i < 5000; i++) {
        struct tree_node *node = tree_search(&tree, tree_key(&tree, i));

        assert_non_null(node);
        assert_int_equal(node->key, tree_key(&tree, i));
        assert_int_equal(node->payload_len, 512);
    }
    assert_null(tree_search(&tree, tree_key(&tree, 5000)));
    tree_release(&tree);
}

static void random_keys_keep_tree_shallow(void **state)
{
    struct tree tree;
    size_t height;

    (void)state;
    tree_init(&tree, 7);
    for (int i = 0; i < 100000; i++)
        assert_int_equal(tree_grow(&tree, 16), 0);
    height = tree_height(&tree);
    /* A random BST of 100,000 keys is about 40 deep; sorted keys give n. */
    assert_true(height >= 17);
    assert_true(height < 80);
    tree_release(&tree);
}

static void payload_pages_are_resident(void **state)
{
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t len = 300 * 1024 + 123;
    struct tree tree;
    struct tree_node *node;
    unsigned char vec[128];
    uintptr_t start, end;

    (void)state;
    tree_init(&tree, 1);
    tree_use_small_pages(&tree);
    assert_int_equal(tree_grow(&tree, len), 0);
    node = tree_search(&tree, tree_key(&tree, 0));
    assert_non_null(node);

    start = (uintptr_t)tree_payload(node) & ~(page - 1);
    end = (uintptr_t)tree_payload(node) + len;
    assert_true((end - start + page - 1) / page <= sizeof(vec));
    assert_int_equal(mincore((void *)start, end - start, vec), 0);
    for (size_t i = 0; i < (end - start + page - 1) / page; i++)
        assert_true(vec[i] & 1);
    assert_true(tree_touch_payload(node) != 0);
    tree_release(&tree);
}

static void release_returns_memory(void **state)
{
    struct tree tree;
    uint64_t before, grown, after;

    (void)state;
    before = memlimit_rss_bytes();
    tree_init(&tree, 3);
    for (int i = 0; i < 640; i++)
        assert_int_equal(tree_grow(&tree, 100 * 1024), 0);
    grown = memlimit_rss_bytes();
    assert_true(grown >= before + 60 * MIB);

    tree_release(&tree);
    after = memlimit_rss_bytes();
    assert_true(after < before + 4 * MIB);
    assert_int_equal(tree.nodes, 0);
    assert_null(tree.root);

    /* The tree grows again after a release. */
    assert_int_equal(tree_grow(&tree, 4096), 0);
    assert_int_equal(tree.nodes, 1);
    tree_release(&tree);
}

static void degenerate_chain_is_searched(void **state)
{
    const size_t depth = 1000000;
    struct tree tree;
    struct tree_node *nodes = calloc(depth, sizeof(*nodes));

    (void)state;
    assert_non_null(nodes);
    tree_init(&tree, 0);
    /* Ascending keys linked to the right: a list of a million levels. */
    for (size_t i = 0; i < depth; i++) {
        nodes[i].key = i;
        nodes[i].right = i + 1 < depth ? &nodes[i + 1] : NULL;
    }
    tree.root = &nodes[0];
    tree.nodes = depth;
    assert_ptr_equal(tree_search(&tree, depth - 1), &nodes[depth - 1]);
    assert_null(tree_search(&tree, depth));
    assert_int_equal(tree_height(&tree), depth);
    tree.root = NULL;
    free(nodes);
}

static void zero_payload_is_rejected(void **state)
{
    struct tree tree;

    (void)state;
    tree_init(&tree, 5);
    assert_int_equal(tree_grow(&tree, 0), -EINVAL);
    assert_int_equal(tree.nodes, 0);
    tree_release(&tree);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(grow_and_find_every_key),
        cmocka_unit_test(random_keys_keep_tree_shallow),
        cmocka_unit_test(payload_pages_are_resident),
        cmocka_unit_test(release_returns_memory),
        cmocka_unit_test(degenerate_chain_is_searched),
        cmocka_unit_test(zero_payload_is_rejected),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
