//! What a platform's answers may and may not choose for ferry: the scheme of the registry
//! (never plain HTTP unless the user said `--plain`).

mod common;

use common::platform::*;
use common::*;

#[test]
fn a_product_base_http_address_does_not_choose_plain_http() {
    // something listening where ProductBase points, to see whether ferry connects at all
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let p = FakePlatform::start(PlatformOpts::default());
    p.set_product_base(&format!("http://{addr}"), None, false);
    p.set_registry_admin(USER, PASSWORD);
    let mut args: Vec<String> = vec![
        "push".into(),
        fixture("oam-application").display().to_string(),
    ];
    args.extend(p.token_flags());
    let run = ferry(&args);
    assert_eq!(run.code, 7, "{}", run.all());
    assert!(
        run.stderr.contains(&format!(
            "ProductBase base names the registry as http://{addr}"
        )) && run.stderr.contains("--plain"),
        "{}",
        run.stderr
    );
    assert!(
        listener.accept().is_err(),
        "ferry connected to the server-chosen plain-HTTP registry"
    );
    assert!(!run.all().contains(PASSWORD));

    // said by the user, it is plain HTTP (against a real registry)
    let reg = Registry::start(RegistryOpts::default());
    p.set_product_base(&format!("http://{}", reg.host()), None, false);
    args.push("--plain".into());
    let run = ferry(&args);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stderr.contains("plain HTTP"), "{}", run.stderr);
    for (reference, _) in package_images(&fixture("oam-application")) {
        assert!(
            reg.skopeo_raw(&path_of(&reference)).is_some(),
            "{reference} did not land"
        );
    }
}
