//! Finishing touches on str0m's SDP answer so that clients other than the
//! browsers accept it without quirks of their own.
//!
//! str0m writes the engine's ICE candidates only into the first m-section of
//! the BUNDLE group and writes no `a=end-of-candidates`. Both are allowed
//! (RFC 8843 section 7.3.1 puts transport attributes in the tagged m-section;
//! RFC 8840 section 4.1 makes `a=end-of-candidates` optional), but they leave
//! a client guessing:
//!
//! - aiortc 1.16 reads the remote candidates of a BUNDLE group from its last
//!   m-section, so it never connects to an answer that has them only in the
//!   first (its bundling keeps the transport of one m-section and takes the
//!   candidates from another).
//! - Without `a=end-of-candidates`, a non-trickle client does not know that
//!   the list is complete; an ICE-lite server never trickles, so it is.
//!
//! The engine therefore repeats its candidates in every m-section that is
//! not rejected (port 0) and ends each such section with
//! `a=end-of-candidates`. A client that bundles uses the candidates of the
//! tagged section and ignores the copies, exactly as Janus and mediasoup's
//! answers behave.

/// Copy the answer's candidate lines into every accepted m-section that has
/// none, and end each accepted m-section's candidates with
/// `a=end-of-candidates`. Lines keep str0m's `\r\n` endings; an answer with
/// no candidate at all is returned unchanged.
pub(crate) fn with_candidates_in_every_section(sdp: &str) -> String {
    let lines: Vec<&str> = sdp.lines().map(|l| l.trim_end_matches('\r')).collect();
    let candidates: Vec<&str> = {
        let mut seen: Vec<&str> = Vec::new();
        for l in lines.iter().filter(|l| l.starts_with("a=candidate:")) {
            if !seen.contains(l) {
                seen.push(l);
            }
        }
        seen
    };
    if candidates.is_empty() {
        return sdp.to_string();
    }

    // Split into the session part and one block per m-section.
    let mut blocks: Vec<Vec<&str>> = vec![Vec::new()];
    for &l in &lines {
        if l.starts_with("m=") {
            blocks.push(Vec::new());
        }
        // A final empty line (from a trailing CRLF) is not a line of its own.
        if !l.is_empty() {
            blocks.last_mut().expect("blocks starts non-empty").push(l);
        }
    }

    let mut out = String::with_capacity(sdp.len() + blocks.len() * 200);
    for (i, block) in blocks.iter().enumerate() {
        let rejected = i > 0 && block.first().is_some_and(|m| media_port(m) == Some(0));
        if i == 0 || rejected {
            for l in block {
                out.push_str(l);
                out.push_str("\r\n");
            }
            continue;
        }
        let has_candidates = block.iter().any(|l| l.starts_with("a=candidate:"));
        let mut wrote_candidates = false;
        for l in block {
            if *l == "a=end-of-candidates" {
                continue;
            }
            if has_candidates && l.starts_with("a=candidate:") {
                out.push_str(l);
                out.push_str("\r\n");
                continue;
            }
            // Candidates go where str0m puts them: before a=ice-ufrag; a
            // section without that attribute gets them at its end.
            if !wrote_candidates && l.starts_with("a=ice-ufrag:") {
                wrote_candidates = true;
                push_candidates(&mut out, has_candidates, &candidates);
            }
            out.push_str(l);
            out.push_str("\r\n");
        }
        if !wrote_candidates {
            push_candidates(&mut out, has_candidates, &candidates);
        }
    }
    out
}

/// The copies of `all` unless the section has its own (written in place),
/// then the end marker.
fn push_candidates(out: &mut String, has_own: bool, all: &[&str]) {
    if !has_own {
        for c in all {
            out.push_str(c);
            out.push_str("\r\n");
        }
    }
    out.push_str("a=end-of-candidates\r\n");
}

/// The port of an `m=` line (`m=video 9 UDP/TLS/RTP/SAVPF 96`).
fn media_port(m_line: &str) -> Option<u16> {
    m_line
        .split_whitespace()
        .nth(1)?
        .split('/')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = "v=0\r\n\
o=str0m 1 2 IN IP4 0.0.0.0\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1 2\r\n\
a=ice-lite\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
c=IN IP4 0.0.0.0\r\n\
a=mid:0\r\n\
a=candidate:1 1 udp 2130706175 127.0.0.1 40000 typ host\r\n\
a=ice-ufrag:pz1abc\r\n\
a=ice-pwd:secret\r\n\
a=sendrecv\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
c=IN IP4 0.0.0.0\r\n\
a=mid:1\r\n\
a=ice-ufrag:pz1abc\r\n\
a=ice-pwd:secret\r\n\
a=recvonly\r\n\
m=video 0 UDP/TLS/RTP/SAVPF 96\r\n\
c=IN IP4 0.0.0.0\r\n\
a=mid:2\r\n\
a=inactive\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
a=mid:3\r\n\
a=sctp-port:5000\r\n";

    fn sections(sdp: &str) -> Vec<String> {
        sdp.split("m=").skip(1).map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_accepted_section_gets_the_candidates_and_end_of_candidates() {
        let out = with_candidates_in_every_section(ANSWER);
        let s = sections(&out);
        assert_eq!(s.len(), 4);
        let cand = "a=candidate:1 1 udp 2130706175 127.0.0.1 40000 typ host\r\n";
        for i in [0, 1, 3] {
            assert_eq!(s[i].matches(cand).count(), 1, "section {i}: {}", s[i]);
            assert_eq!(
                s[i].matches("a=end-of-candidates\r\n").count(),
                1,
                "section {i}"
            );
            let c = s[i].find(cand).unwrap();
            let e = s[i].find("a=end-of-candidates").unwrap();
            assert!(c < e, "candidates precede end-of-candidates in section {i}");
        }
        // Candidates before the credentials, as str0m writes them.
        assert!(s[1].find(cand).unwrap() < s[1].find("a=ice-ufrag").unwrap());
        // The rejected section stays as it was.
        assert!(!s[2].contains("a=candidate"));
        assert!(!s[2].contains("end-of-candidates"));
        // Session part untouched, CRLF everywhere.
        assert!(out.starts_with("v=0\r\no=str0m 1 2 IN IP4 0.0.0.0\r\n"));
        assert!(!out.replace("\r\n", "").contains('\n'));
        assert!(out.ends_with("a=end-of-candidates\r\n"));
    }

    #[test]
    fn applying_twice_changes_nothing() {
        let once = with_candidates_in_every_section(ANSWER);
        assert_eq!(with_candidates_in_every_section(&once), once);
    }

    #[test]
    fn several_candidates_are_all_copied_once() {
        let sdp = ANSWER.replace(
            "a=candidate:1 1 udp 2130706175 127.0.0.1 40000 typ host\r\n",
            "a=candidate:1 1 udp 2130706175 127.0.0.1 40000 typ host\r\n\
a=candidate:2 1 tcp 1518280447 127.0.0.1 40001 typ host tcptype passive\r\n",
        );
        let out = with_candidates_in_every_section(&sdp);
        for i in [0, 1, 3] {
            let s = &sections(&out)[i];
            assert_eq!(s.matches("a=candidate:").count(), 2, "section {i}");
        }
    }

    #[test]
    fn an_answer_without_candidates_is_unchanged() {
        let sdp = ANSWER.replace(
            "a=candidate:1 1 udp 2130706175 127.0.0.1 40000 typ host\r\n",
            "",
        );
        assert_eq!(with_candidates_in_every_section(&sdp), sdp);
    }

    #[test]
    fn a_str0m_answer_gets_candidates_everywhere_and_the_offerer_accepts_it() {
        use std::time::Instant;
        use str0m::change::{SdpAnswer, SdpOffer};
        use str0m::media::{Direction, MediaKind};
        use str0m::{Candidate, Rtc};

        let now = Instant::now();
        let mut client = Rtc::new(now);
        let mut api = client.sdp_api();
        api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        let (offer, pending) = api.apply().expect("an offer");
        let offer = SdpOffer::from_sdp_string(&offer.to_sdp_string()).unwrap();

        let mut server = Rtc::builder().set_ice_lite(true).build(now);
        let addr = "127.0.0.1:40000".parse().unwrap();
        server.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let answer = server
            .sdp_api()
            .accept_offer(offer)
            .unwrap()
            .to_sdp_string();
        assert_eq!(sections(&answer)[2].matches("a=candidate:").count(), 0);

        let out = with_candidates_in_every_section(&answer);
        for (i, s) in sections(&out).iter().enumerate() {
            assert_eq!(s.matches("a=candidate:").count(), 1, "section {i}: {s}");
            assert_eq!(s.matches("a=end-of-candidates").count(), 1, "section {i}");
        }
        let parsed = SdpAnswer::from_sdp_string(&out).expect("str0m parses the result");
        client
            .sdp_api()
            .accept_answer(pending, parsed)
            .expect("the offerer accepts the result");
    }
}
