#include <rte_config.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include "shim.h"

uint16_t nflet_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) {
	return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t nflet_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) {
	return rte_eth_tx_burst(port, queue, pkts, n);
}

struct rte_mbuf *nflet_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }

void nflet_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

uint8_t *nflet_mbuf_data(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, uint8_t *); }

uint16_t nflet_mbuf_data_len(const struct rte_mbuf *m) { return m->data_len; }

uint32_t nflet_mbuf_pkt_len(const struct rte_mbuf *m) { return m->pkt_len; }

uint16_t nflet_mbuf_nb_segs(const struct rte_mbuf *m) { return m->nb_segs; }

uint16_t nflet_mbuf_tailroom(const struct rte_mbuf *m) { return rte_pktmbuf_tailroom(m); }

void nflet_mbuf_set_len(struct rte_mbuf *m, uint16_t len) {
	m->data_len = len;
	m->pkt_len = len;
}

uint32_t nflet_mbuf_rss(const struct rte_mbuf *m) {
	return (m->ol_flags & RTE_MBUF_F_RX_RSS_HASH) ? m->hash.rss : 0;
}

int nflet_errno(void) { return rte_errno; }

unsigned nflet_lcore_id(void) { return rte_lcore_id(); }

uint64_t nflet_rss_hf(void) { return RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP; }

uint64_t nflet_rx_offload_rss_hash(void) { return RTE_ETH_RX_OFFLOAD_RSS_HASH; }
