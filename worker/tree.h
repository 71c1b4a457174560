/*
 * The stress tree: a binary search tree whose nodes carry byte payloads.
 *
 * Nodes and payloads are carved from large anonymous mappings (chunks) with a
 * bump pointer, so growing the tree costs one page population per node and
 * freeing it is a few munmap(2) calls that hand every page straight back to
 * the kernel.  malloc would keep freed memory in its heap and the resident
 * size would not drop after a clear.
 *
 * Keys are a bijective mix of the insertion index, so they are distinct,
 * look random to the tree (expected depth O(log n)), and a search for a key
 * of any index below tree->nodes is known to hit.
 */
#ifndef WORKER_TREE_H
#define WORKER_TREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tree_node {
    uint64_t key;
    struct tree_node *left;
    struct tree_node *right;
    size_t payload_len;
    /* The payload bytes follow the node in the same chunk. */
};

struct tree_chunk;

struct tree {
    struct tree_node *root;
    size_t nodes;
    size_t payload_bytes;
    uint64_t seed;
    /* Whether new chunks ask for transparent huge pages. */
    bool use_huge_pages;
    /* The value use_huge_pages is reset to on release. */
    bool huge_pages_allowed;
    struct tree_chunk *chunks;
};

/* Prepares an empty tree; keys derive from seed. */
void tree_init(struct tree *tree, uint64_t seed);

/*
 * Frees every node and unmaps every chunk, leaving an empty tree that can
 * grow again.  Safe on an empty or zeroed tree.
 */
void tree_release(struct tree *tree);

/*
 * Allows or forbids transparent huge pages for the tree's memory.  Huge
 * pages fault in 2 MiB at a time, which fills memory faster and is allowed
 * by default; forbidding them makes every page a 4 KiB page.
 */
void tree_allow_huge_pages(struct tree *tree, bool allow);

/* Returns the key of the node inserted as number index (0-based). */
uint64_t tree_key(const struct tree *tree, uint64_t index);

/*
 * Inserts the next node with a payload of payload_len bytes (at least 1).
 * Every page of the payload is written, so it is resident on return.
 * Returns 0, or -ENOMEM when no chunk could be mapped or populated.
 */
int tree_grow(struct tree *tree, size_t payload_len);

/* Finds the node with key; returns NULL when there is none. */
struct tree_node *tree_search(const struct tree *tree, uint64_t key);

/* Returns the node's payload bytes. */
unsigned char *tree_payload(struct tree_node *node);

/*
 * Reads one word from every page of the node's payload and returns their
 * sum, so that the pages are accessed and the compiler cannot drop the reads.
 */
uint64_t tree_touch_payload(struct tree_node *node);

/* Returns the depth of the deepest node (0 for an empty tree). */
size_t tree_height(const struct tree *tree);

/*
 * Stops backing the rest of the current chunk with transparent huge pages, so
 * that the remaining growth is resident in 4 KiB steps.  Used near a target,
 * where a 2 MiB step would overshoot it.
 */
void tree_use_small_pages(struct tree *tree);

#endif
