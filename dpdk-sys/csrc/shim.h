/* Out-of-line versions of DPDK's static-inline fast-path functions, so Rust can call them. */
#ifndef NFLET_DPDK_SHIM_H
#define NFLET_DPDK_SHIM_H
#include <stdint.h>

struct rte_mbuf;
struct rte_mempool;

uint16_t nflet_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t nflet_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
struct rte_mbuf *nflet_pktmbuf_alloc(struct rte_mempool *mp);
void nflet_pktmbuf_free(struct rte_mbuf *m);
/* Start of the packet data in the first segment. */
uint8_t *nflet_mbuf_data(struct rte_mbuf *m);
/* Bytes of packet data in the first segment. */
uint16_t nflet_mbuf_data_len(const struct rte_mbuf *m);
/* Total packet length over all segments. */
uint32_t nflet_mbuf_pkt_len(const struct rte_mbuf *m);
/* Number of segments. */
uint16_t nflet_mbuf_nb_segs(const struct rte_mbuf *m);
/* Bytes available after the data in the first segment (its tailroom). */
uint16_t nflet_mbuf_tailroom(const struct rte_mbuf *m);
/* Sets the length of a single-segment packet (data_len = pkt_len = len); len must fit. */
void nflet_mbuf_set_len(struct rte_mbuf *m, uint16_t len);
/* RSS hash reported by the NIC, or 0 when it reported none. */
uint32_t nflet_mbuf_rss(const struct rte_mbuf *m);
int nflet_errno(void);
/* RSS hash types nflet asks for: IPv4/IPv6 with TCP and UDP ports. */
uint64_t nflet_rss_hf(void);
/* Offload flag a port reports when it can fill mbuf hash.rss. */
uint64_t nflet_rx_offload_rss_hash(void);
unsigned nflet_lcore_id(void);
#endif
