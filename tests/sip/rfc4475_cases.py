"""Expected outcome of each RFC 4475 torture message at sipfleet, a stateful proxy.

One row per file in ``tests/vectors/rfc4475``; every message arrives over UDP.
A proxy forwards what it need not understand and rejects what breaks framing
or routing (RFC 3261 16.3: 483, 416, 420, ...).

``kind``:
    forward              parse succeeds and the request goes to the next hop
    reject               the proxy answers with ``status`` (never forwards)
    parse-ok-then-drop   a well-formed response with no transaction: dropped
    parse-error-drop     a malformed response: dropped (responses are never
                         answered)

``note`` quotes or paraphrases the decisive text of the RFC 4475 section and,
for rejects, names the field that triggers the answer. Where the RFC lets an
element either reject or accept, the note says which was chosen and why
(Kamailio's behaviour is the usual guide).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

__all__ = ["CASES", "Case", "Kind"]

Kind = Literal["forward", "reject", "parse-ok-then-drop", "parse-error-drop"]


class Case(NamedTuple):
    file: str
    section: str
    kind: Kind
    status: int | None
    note: str


CASES: list[Case] = [
    # 3.1.1 Valid messages
    Case(
        "wsinv.dat",
        "3.1.1.1",
        "reject",
        481,
        "RFC: 'All elements should treat this as a well-formed request'; of "
        "UnknownHeaderWithUnusualValue: 'Proxies would forward this header field unchanged.' "
        "Unfold continuation lines (13 here); allow WS before ':' ('TO :', 'Via  :', "
        "'Content-Length   :', 's :'); names are case-insensitive (MaX-fOrWaRdS); compact m:, "
        "s:, v:; LWS around '/' in sent-protocol; one v: line carries two comma-joined Via "
        "values (3 Vias in all); 'branch=' with its value on the next line; leading zeros "
        "(Max-Forwards 0068 = 68, CSeq 0009 with INVITE on a continuation line); empty Subject; "
        "escaped quotes in display names. Top Via branch 390skdjuw has no z9hG4bK: RFC 2543 "
        "transaction matching. To has a tag and the top Route;lr is not ours: an in-dialog "
        "request for no dialog of ours, which a proxy at the edge must not relay to the Route "
        "(an open relay): parsed whole, then answered 481 through its RFC 2543 transaction.",
    ),
    Case(
        "intmeth.dat",
        "3.1.1.2",
        "forward",
        None,
        "RFC (paraphrase): legal but unusual characters in the method, Request-URI, branch, "
        "display names, parameters and Call-ID; % is not an escape in a token, so "
        "'!interesting-Method0123456789_*+`.%indeed'~' is just an unknown method, which a proxy "
        "forwards (its CSeq method matches byte for byte). The R-URI user part contains '?', "
        "',', '/', ';' and a password ('...crazy?,/;;*:&it+has=1,...'): find the '@' before "
        "the host first, then params and headers, or escruri's 400 fires wrongly. To display "
        "name holds quoted-pairs of BEL, NUL (0x00) and DEL; From display name is unquoted "
        "tokens; a From param value is quoted UTF-8; the Call-ID word contains "
        '<>:\\"/[]?{} with no quoting meaning; the extension header value is UTF-8 with a '
        "BOM. Max-Forwards 255 is the largest legal value.",
    ),
    Case(
        "esc01.dat",
        "3.1.1.3",
        "forward",
        None,
        "RFC: 'A parser must accept this as a well-formed message. The application using the "
        "message must treat the % HEX HEX expansions as equivalent to the character being "
        "encoded.' R-URI sip:sips%3Auser%40example.com@example.net: split at the unescaped "
        "'@' and unescape only for comparison; forward the R-URI bytes unchanged. Compact 'i:' "
        "(Call-ID) and upper-case 'C:' (Content-Type); folded Contact whose URI param %6C%72 "
        "compares equal to 'lr'.",
    ),
    Case(
        "escnull.dat",
        "3.1.1.4",
        "forward",
        None,
        "RFC: 'The message is well formed - parsers must accept this message. Implementations "
        "must take special care when unescaping the Address-of-Record (AOR) in this request so "
        "as to not prematurely shorten the username.' %00 in the To, From and Contact users; "
        "two distinct Contacts (%00 and %00%00); compact 'L:0' with no SP.",
    ),
    Case(
        "esc02.dat",
        "3.1.1.5",
        "forward",
        None,
        "RFC: 'A parser should accept this message as well formed. A proxy would forward or "
        "reject the message depending on what the Request-URI meant to it. An endpoint would "
        "reject this message with a 501.' RE%47IST%45R is an unknown method, not REGISTER, and "
        "matches its CSeq method byte for byte; C%6Fntact is an unknown header, so there are 2 "
        "Contacts, not 3; the '%Z%45' display names and branch z9hG4bK209%fzsnel234 are plain "
        "text. The R-URI sip:registrar.example.com is routable: forward.",
    ),
    Case(
        "lwsdisp.dat",
        "3.1.1.6",
        "forward",
        None,
        "RFC (paraphrase): no LWS between the display-name token and '<' breaks the RFC 3261 "
        "grammar, but that is a known grammar bug; elements should accept the request as well "
        "formed. From: caller<sip:caller@example.com>;tag=323 has display name 'caller'.",
    ),
    Case(
        "longreq.dat",
        "3.1.1.7",
        "forward",
        None,
        "RFC: 'This well-formed request contains header fields with many values and values "
        "that are very long.' 3515-byte datagram; 34 Via lines spelled Via/v/V/ViA/VIa/VIA/"
        "via/viA/vIa/vIA, some with WS before ':'; compact F: (From) and l:; a To display name, "
        "URI params, tag, Call-ID and branch hundreds of bytes long. Line, header and Via "
        "limits must admit it. Top Via (sip33) has no branch: RFC 2543 transaction matching. "
        "The forwarded copy exceeds 1300 bytes: RFC 3261 18.1.1 wants a congestion-controlled "
        "transport (TCP) to the next hop when one is available.",
    ),
    Case(
        "dblreq.dat",
        "3.1.1.8",
        "forward",
        None,
        "Only the first message is processed: a REGISTER with Content-Length 0, forwarded "
        "alone. RFC: the extra octets 'happen to look like a SIP INVITE request, but (per "
        "section 18.3 of [RFC3261]) they are just spurious noise that must be ignored. ... If "
        "the element is a proxy choosing to forward the REGISTER, the INVITE octets would not "
        "appear in the forwarded request.' The 450 trailing octets (CRLF plus an INVITE with "
        "SDP) are discarded unparsed. Compact 'I:' (Call-ID).",
    ),
    Case(
        "semiuri.dat",
        "3.1.1.9",
        "forward",
        None,
        "RFC: 'Receiving elements will accept this as a well-formed message. The Request-URI "
        'will parse so that the user part is "user;par=u@example.net".\' R-URI '
        "sip:user;par=u%40example.net@example.com: split userinfo at '@' before looking for "
        "';' params. Accept is folded over 3 lines.",
    ),
    Case(
        "transports.dat",
        "3.1.1.10",
        "forward",
        None,
        "RFC: 'Parsers must accept this message as well formed. Elements receiving this "
        "message would process it exactly as if the 2nd and subsequent header field values "
        "specified UDP (or other transport).' Five Vias: UDP, SCTP, TLS, UNKNOWN, TCP; only "
        "the top one (UDP) matters to the proxy.",
    ),
    Case(
        "mpart01.dat",
        "3.1.1.11",
        "forward",
        None,
        "RFC: 'The second part is binary encoded and contains null (0x00) characters. "
        "Receivers must take care to frame the received message properly. Parsers must accept "
        "this message as well formed'. The 553-byte body holds NUL, bare CR, bare LF and 8-bit "
        "bytes: frame by Content-Length, never decode or split it as text. Route "
        "<sip:127.0.0.1:5080> (no lr) is preloaded on an initial request (no To tag) and points "
        "at loopback: do not follow it blindly (Kamailio's stock config removes preloaded "
        "Routes on initial requests before dispatching).",
    ),
    Case(
        "unreason.dat",
        "3.1.1.12",
        "parse-ok-then-drop",
        None,
        "RFC: 'This particular response contains unreserved and non-ascii UTF-8 characters. "
        "This response is well formed. A parser must accept this message.' Reason-Phrase "
        "'= 2**3 * 5**2' plus Cyrillic UTF-8: keep it as bytes. No client transaction matches "
        "and the top Via (192.0.2.198) is not the proxy: drop (RFC 3261 16.7, 18.1.2).",
    ),
    Case(
        "noreason.dat",
        "3.1.1.13",
        "parse-ok-then-drop",
        None,
        "RFC (paraphrase): well formed with an empty reason phrase; the SP after the status "
        "code is required (a liberal receiver would accept it missing). Status line "
        "'SIP/2.0 100 ' gives reason ''. Stray response (no transaction, top Via not ours): "
        "drop; a 100 is never forwarded anyway.",
    ),
    # 3.1.2 Invalid messages
    Case(
        "badinv01.dat",
        "3.1.2.1",
        "reject",
        400,
        "RFC: 'The Via header field of this request contains additional semicolons and commas "
        "without parameters or values. The Contact header field contains additional "
        "semicolons without parameters. This message is syntactically invalid. An element "
        "receiving this request should respond with a 400 Bad Request error.' Trigger: Via "
        "'SIP/2.0/UDP 192.0.2.15;;,;,,' (empty params, empty comma-separated values); also "
        "Contact '...>;;;;'. The 400 copies the raw Via bytes and goes to the datagram's "
        "source address (RFC 3261 18.2.2 with received=); the sent-by host is still readable.",
    ),
    Case(
        "clerr.dat",
        "3.1.2.2",
        "reject",
        400,
        "RFC: 'When sent over UDP (as this message ostensibly was), the receiving element "
        "should respond with a 400 Bad Request error.' Trigger: Content-Length 9999 but only "
        "154 octets follow the empty line (RFC 3261 18.3: packet ends before the body).",
    ),
    Case(
        "ncl.dat",
        "3.1.2.3",
        "reject",
        400,
        "RFC: 'An element receiving this message should respond with an error. This request "
        "appeared over UDP, so the remainder of the datagram can simply be discarded.' "
        "Trigger: Content-Length -999 (must be 1*DIGIT).",
    ),
    Case(
        "scalar02.dat",
        "3.1.2.4",
        "reject",
        400,
        "RFC: 'An element receiving this request should respond with a 400 Bad Request due to "
        "the CSeq error. If only the Max-Forwards field were in error, the element could choose "
        "to process the request as if the field were absent. If only the expiry values were in "
        "error, the element could treat them as if they contained the default values for "
        "expiration (3600 in this case).' Trigger: CSeq number 36893488147419103232 = 2**65 "
        "(RFC 3261 8.1.1.5: must be < 2**31). Not decisive alone: Max-Forwards 300 > 255, "
        "Expires 10**100, Contact ;expires=280297596632815 (on a folded line).",
    ),
    Case(
        "scalarlg.dat",
        "3.1.2.5",
        "parse-error-drop",
        None,
        "RFC: 'An element receiving this response will simply discard it.' Triggers: CSeq "
        "number 9292394834772304023312 > 2**32-1, Retry-After 949302838503028349304023988 "
        "> 2**32-1, Warning code 1812 has 4 digits (warn-code is 3DIGIT). A response is never "
        "answered.",
    ),
    Case(
        "quotbal.dat",
        "3.1.2.6",
        "reject",
        400,
        "RFC: 'This is a request with an unterminated quote in the display name of the To "
        "field. An element receiving this request should return a 400 Bad Request error.' "
        "Trigger: To '\"Mr. J. User <sip:j.user@example.com>' has no closing DQUOTE; the "
        "quoted string ends with the header line and must not swallow later lines.",
    ),
    Case(
        "ltgtruri.dat",
        "3.1.2.7",
        "reject",
        400,
        "RFC: 'This INVITE request is invalid because the Request-URI has been enclosed within "
        'in "<>". It is reasonable always to reject a request with this error with a 400 Bad '
        "Request.' Trigger: Request-URI '<sip:user@example.com>' (RFC 3261 7.1: MUST NOT be "
        "enclosed in '<>'); the proxy routes on the R-URI, so no guessing. (Its Via also lacks "
        "a branch.)",
    ),
    Case(
        "lwsruri.dat",
        "3.1.2.8",
        "reject",
        400,
        "RFC: 'This INVITE has illegal LWS within the Request-URI. An element receiving this "
        "request should respond with a 400 Bad Request.' Trigger: Request-Line "
        "'INVITE sip:user@example.com; lr SIP/2.0' has 4 SP-separated parts (the version "
        "field would be 'lr').",
    ),
    Case(
        "lwsstart.dat",
        "3.1.2.9",
        "reject",
        400,
        "RFC: 'This INVITE has illegal multiple SP characters between elements of the start "
        "line. It is acceptable to reject this request as malformed.' (A liberal element may "
        "ignore them but must not forward them.) Choice: reject, as Kamailio does "
        "(parse_first_line takes the empty token after 'INVITE ' as the URI and fails); the "
        "rule stays Method SP Request-URI SP SIP-Version. Trigger: double SP in "
        "'INVITE  sip:user@example.com  SIP/2.0'.",
    ),
    Case(
        "trws.dat",
        "3.1.2.10",
        "forward",
        None,
        "RFC: 'It is acceptable to reject this request as malformed. An element that is "
        "liberal in what it accepts may ignore these extra SP characters when processing the "
        "request. If the element forwards the request, it must not include these extra SP "
        "characters in the messages it sends.' Choice: accept, as Kamailio does "
        "(is_empty_end() allows SP/HTAB between SIP-Version and CRLF). The forwarded "
        "Request-Line is rebuilt as 'OPTIONS sip:remote-target@example.com SIP/2.0' without "
        "the two trailing SP.",
    ),
    Case(
        "escruri.dat",
        "3.1.2.11",
        "reject",
        400,
        "RFC: 'It is acceptable for an element to reject this request with a 400 Bad Request.' "
        "(A liberal proxy must strip the headers: they 'must not appear in the Request-URI of "
        "the forwarded request (and most certainly must not be translated into the actual "
        "header ...)'.) Choice: reject. RFC 3261 19.1.1 allows no headers component in a "
        "Request-URI, '?Route=' is a routing-injection attempt, and stripping would silently "
        "change the target (Kamailio forwards it untouched, which the RFC forbids). Trigger: "
        "'?' after the hostport of the R-URI (a '?' in the user part is legal, see intmeth).",
    ),
    Case(
        "baddate.dat",
        "3.1.2.12",
        "forward",
        None,
        "RFC: 'It is acceptable to reject this request as malformed (though an element "
        "shouldn't do that unless the contents of the Date header field were actually "
        "important to its processing). An element wishing to be liberal in what it accepts "
        "could ignore this value altogether if it wasn't going to use the Date header field "
        "anyway.' The proxy never reads Date ('Fri, 01 Jan 2010 16:00:00 EST'; only GMT is "
        "legal): forward it unchanged.",
    ),
    Case(
        "regbadct.dat",
        "3.1.2.13",
        "forward",
        None,
        "RFC: 'It is reasonable for an element receiving this request to respond with a 400 "
        "Bad Request. An element choosing to be liberal in what it accepts could infer the "
        "angle brackets since there is no ambiguity in this example.' Choice: forward. A proxy "
        "does not interpret a REGISTER's Contact (Kamailio's core does not parse it unless a "
        "module asks); the registrar judges it. Contact "
        "'sip:user@example.com?Route=%3Csip:sip.example.com%3E' (no <>) is passed on byte for "
        "byte and its '?Route=' never becomes a header.",
    ),
    Case(
        "badaspec.dat",
        "3.1.2.14",
        "forward",
        None,
        "RFC: 'Parsers receiving this request must not break. It is reasonable to reject this "
        "request with a 400 Bad Request response. Elements attempting to be liberal may ignore "
        "the spaces.' Choice: accept, as Kamailio's parse_addr_spec does (skips SP after '<', "
        "ends the URI at the SP before '>'). To '\"Watson, Thomas\" < sip:t.watson@example.org >' "
        "yields sip:t.watson@example.org for hashing; the header bytes are forwarded unchanged.",
    ),
    Case(
        "baddn.dat",
        "3.1.2.15",
        "reject",
        400,
        "RFC: 'It is reasonable always to reject this kind of error with a 400 Bad Request "
        "response. ... If this element were a proxy, it must not propagate the error into the "
        "request it forwards.' A proxy may not rewrite From/To, so rejecting is the only "
        "compliant choice. Trigger: unquoted non-token display names 'Bell, Alexander <...>' "
        "(From) and 'Watson, Thomas <...>' (To); the ',' would split single-valued headers. "
        "The datagram also ends after 'l: 0\\r\\n' with no empty line: still answer 400.",
    ),
    Case(
        "badvers.dat",
        "3.1.2.16",
        "reject",
        505,
        "RFC: 'To an element implementing RFC 3261, this request is malformed due to its high "
        "version number. The element should respond to the request with a 505 Version Not "
        "Supported error.' Trigger: SIP-Version 'SIP/7.0' in the Request-Line. The Via "
        "'SIP/7.0/UDP c.example.com' must still parse (protocol-version is a token) so that "
        "the 505 can be sent back.",
    ),
    Case(
        "mismatch01.dat",
        "3.1.2.17",
        "reject",
        400,
        "RFC: 'This request has mismatching values for the method in the start line and the "
        "CSeq header field. Any element receiving this request will respond with a 400 Bad "
        "Request.' Trigger: Request-Line method OPTIONS vs 'CSeq: 8 INVITE' (case-sensitive "
        "comparison).",
    ),
    Case(
        "mismatch02.dat",
        "3.1.2.18",
        "reject",
        501,
        "RFC: 'Any element receiving this response should respond with a 501 Not Implemented. "
        "A 400 Bad Request is also acceptable, but choosing a 501 (particularly at proxies) has "
        "better future-proof characteristics.' Trigger: unknown method NEWMETHOD with "
        "'CSeq: 8 INVITE'. Rule: CSeq/method mismatch gives 501 when the Request-Line method is "
        "unknown to the proxy, 400 when it is known (mismatch01).",
    ),
    Case(
        "bigcode.dat",
        "3.1.2.19",
        "parse-error-drop",
        None,
        "RFC: 'This response has a response code larger than 699. An element receiving this "
        "response should simply drop it.' Trigger: Status-Code 4294967301 (must be exactly 3 "
        "digits, 100-699; a 32-bit parse would wrap it to 5).",
    ),
    # 3.2 Transaction layer
    Case(
        "badbranch.dat",
        "3.2.1",
        "forward",
        None,
        "RFC: 'A parser must not break when receiving this message. An element receiving this "
        "request could reject the request with a 400 Response (preferably statelessly, as "
        "other requests from the source are likely also to have a malformed branch "
        "parameter), or it could fall back to the RFC 2543-style transaction identifier.' "
        "Choice: fall back, as Kamailio's t_lookup_request does (RFC 3261 matching only when "
        "the branch is longer than 'z9hG4bK'), the same path inv2543 needs. A bare "
        "'branch=z9hG4bK' must never be a transaction key: all such requests would collide.",
    ),
    # 3.3 Application layer
    Case(
        "insuf.dat",
        "3.3.1",
        "reject",
        400,
        "RFC: 'This request contains no Call-ID, From, or To header fields. An element "
        "receiving this message must not break because of the missing information. Ideally, it "
        "will respond with a 400 Bad Request error.' Triggers: Call-ID, From and To missing "
        "(mandatory, RFC 3261 8.1.1); the 400 copies the Via and CSeq present and omits the "
        "rest.",
    ),
    Case(
        "unkscm.dat",
        "3.3.2",
        "reject",
        416,
        "RFC: 'A parser must accept this as a well-formed SIP request. An element receiving "
        "this request will reject it with a 416 Unsupported URI Scheme response.' Trigger: "
        "R-URI scheme 'nobodyKnowsThisScheme' (RFC 3261 16.3 step 2). Never fall back to "
        "routing on the To header.",
    ),
    Case(
        "novelsc.dat",
        "3.3.3",
        "reject",
        416,
        "RFC: 'If an element will never accept this scheme as meaningful in a Request-URI, it "
        "is appropriate to treat it as unknown and return a 416 Unsupported URI Scheme "
        "response.' Trigger: R-URI scheme 'soap.beep' (soap.beep://192.0.2.103:3002); the "
        "proxy routes only sip/sips.",
    ),
    Case(
        "unksm2.dat",
        "3.3.4",
        "forward",
        None,
        "RFC: 'The message is syntactically valid. Parsers must not fail when receiving this "
        "message. Proxies should treat this message as they would any other request for this "
        "URI.' (Rejecting with 400 is the registrar's business.) To isbn:2983792873, From "
        "<http://www.example.com>, Contact <name:John_Smith>: keep non-SIP URIs opaque; "
        "From/To-URI hashing must cope with them.",
    ),
    Case(
        "bext01.dat",
        "3.3.5",
        "reject",
        420,
        "RFC: 'Any element receiving this request will respond with a 420 Bad Extension "
        "response, containing an Unsupported header field listing these features from either "
        "the Require or Proxy-Require header field, depending on the role in which the element "
        "is responding.' As a proxy (RFC 3261 16.3 step 5) only Proxy-Require counts: expect "
        "'Unsupported: noProxiesSupportThis, norDoAnyProxiesSupportThis'. Require is for the "
        "UAS and is ignored.",
    ),
    Case(
        "invut.dat",
        "3.3.6",
        "forward",
        None,
        "RFC: 'This INVITE request contains a body of unknown type. It is syntactically valid. "
        "A parser must not fail when receiving it. A proxy receiving this request would "
        "process it just as it would any other INVITE.' Content-Type application/unknownformat; "
        "the 40-byte body is never parsed.",
    ),
    Case(
        "regaut01.dat",
        "3.3.7",
        "forward",
        None,
        "RFC: 'A proxy will treat this request as it would any other REGISTER. If it forwards "
        "the request, it will include this Authorization header field unmodified in the "
        "forwarded messages.' Authorization: NoOneKnowsThisScheme opaque-data=here; "
        "'Content-Length:0' has no SP.",
    ),
    Case(
        "multi01.dat",
        "3.3.8",
        "reject",
        400,
        "RFC: 'An element receiving this request would respond with a 400 Bad Request error.' "
        "Triggers: two values each of CSeq (5 and 59), Call-ID, To, From and Max-Forwards (70 "
        "and 5); these headers must appear exactly once.",
    ),
    Case(
        "mcl01.dat",
        "3.3.9",
        "reject",
        400,
        "RFC (paraphrase): conflicting Content-Length values are, for framing, the same as an "
        "invalid one; respond with an error; over UDP the rest of the datagram is discarded "
        "('If a request like this arrives over TCP, the framing error is not recoverable, and "
        "the connection should be closed.'). Trigger: Content-Length 13 and Content-Length 5 "
        "(67 octets follow).",
    ),
    Case(
        "bcast.dat",
        "3.3.10",
        "parse-ok-then-drop",
        None,
        "RFC: 'If a proxy followed normal response processing rules blindly, it would forward "
        "this response to the broadcast address. To protect against this as an avenue of "
        "attack, proxies should drop such responses.' Second Via sent-by 255.255.255.255; the "
        "top Via (192.0.2.198) is not ours either. Never send to a broadcast or multicast "
        "address taken from a Via.",
    ),
    Case(
        "zeromf.dat",
        "3.3.11",
        "reject",
        483,
        "RFC: 'A proxy should not forward the request and should respond 483 (Too Many "
        "Hops).' Trigger: Max-Forwards: 0 (RFC 3261 16.3 step 3; for OPTIONS a proxy MAY "
        "answer as the UAS instead, which the balancer does not).",
    ),
    Case(
        "cparam01.dat",
        "3.3.12",
        "forward",
        None,
        "RFC: 'This register request contains a contact where the 'unknownparam' parameter "
        "must be interpreted as a contact-param and not a url-param.' Contact "
        "sip:+19725552222@gw1.example.net;unknownparam is in addr-spec form, so the param "
        "belongs to the header. Forward unchanged.",
    ),
    Case(
        "cparam02.dat",
        "3.3.13",
        "forward",
        None,
        "RFC: 'The register should succeed, and a subsequent retrieval of the registration "
        'must include "unknownparam" as a url-parameter.\' Contact in <>, so ;unknownparam is '
        "a URI param. Forward unchanged.",
    ),
    Case(
        "regescrt.dat",
        "3.3.14",
        "forward",
        None,
        "RFC: 'This register request contains a contact where the URI has an escaped header.' "
        "and 'The register should succeed'. Headers in an enclosed Contact URI are legal "
        "(unlike in the R-URI, see escruri). Compact 'M:' (Contact) and 'L:0'.",
    ),
    Case(
        "sdp01.dat",
        "3.3.15",
        "forward",
        None,
        "RFC: 'The recipient of this request could respond with a 406 Not Acceptable ... It is "
        "also appropriate to respond with a 400 Bad Request, since all SIP User-Agents (UAs) "
        "supporting INVITE are required to support application/sdp.' That is the UAS's call; "
        "a proxy does not interpret Accept (text/nobodyKnowsThis): forward.",
    ),
    # 3.4 Backward compatibility
    Case(
        "inv2543.dat",
        "3.4.1",
        "forward",
        None,
        "RFC: 'This is a legal message per RFC 2543 (and several bis versions) that should be "
        "accepted by RFC 3261 elements that want to maintain backwards compatibility.' No Via "
        "branch (RFC 2543 transaction matching, RFC 3261 17.2.3); no From tag; no "
        "Max-Forwards (add 'Max-Forwards: 70' when forwarding, RFC 3261 16.6 step 3); no "
        "Content-Length (the body is the 105 octets after the empty line; add Content-Length "
        "when forwarding, required over TCP). In the addr-spec To, ';user=phone' is a header "
        "param, not a URI param.",
    ),
]
